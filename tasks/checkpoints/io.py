"""Reading checkpoints that may come from someone else: local files and URLs.

Every checkpoint is read with ``torch.load(..., weights_only=True)``, so a pickle that would
run code is refused. A URL is downloaded into ``$MOBILEZOO_CACHE/checkpoints`` and checked
against the server (ETag, Last-Modified, size) on every use, so a remote file that changed
under the same name is fetched again; a ``#sha256=<hex>`` suffix on the URL pins the
content. Errors are one line that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import reprlib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import torch

from tasks.config_limits import shape_problem
from tasks.data.cache import cache_dir

log = logging.getLogger(__name__)

#: largest hyper-parameter block a checkpoint may carry (its ``repr``, in characters)
MAX_HPARAMS_CHARS = 64_000
#: largest pickle (the structure of a checkpoint, tensors excluded) read from a checkpoint:
#: a zoo checkpoint's is well under 1 MiB; unpickling with weights_only runs at about a
#: megabyte a second, so this bounds the time too
MAX_PICKLE_BYTES = 4 * 2**20
#: longest value quoted in an error message
_QUOTE_CHARS = 80


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def shorten(text: str, limit: int = _QUOTE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters for an error message."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quote(value: Any, limit: int = _QUOTE_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters to fit in one line of an error message.
    Nested containers are shown a few levels and items deep (``reprlib``): the plain
    ``repr`` of a list nested 100,000 deep recurses too far, and of one list shared at
    every level of 60 takes forever."""
    return shorten(_SHORT_REPR.repr(value), limit)


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 2 * _QUOTE_CHARS, 40
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = _SHORT_REPR.maxset = 8


def is_url(path: str | os.PathLike) -> bool:
    return str(path).startswith(("http://", "https://"))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint safely.

    Args:
        path: a local file (``~`` expanded) or an ``http(s)://`` URL (see ``fetch_checkpoint``).

    Returns:
        The checkpoint dict (it has at least ``state_dict``).

    Raises:
        CheckpointError: missing, empty, truncated or not a zip file, a pickle that would run
            code, or not a Lightning checkpoint.
    """
    local = fetch_checkpoint(str(path)) if is_url(path) else Path(path).expanduser()
    if not local.is_file():
        raise CheckpointError(f"checkpoint {local}: no such file")
    size = local.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {local}: the file is empty (0 bytes)")
    _check_records(local)
    try:
        # Mapped, not read: a tensor is only read when used, so one that does not belong
        # to the model costs no memory (tasks.checkpoints.cost compares them first).
        ckpt = torch.load(local, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # zip, pickle and weights_only errors all mean "not readable"
        raise CheckpointError(f"checkpoint {local} ({size} bytes) cannot be read: "
                              f"{_why_unreadable(local, err)}") from None  # fmt: skip
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint {local} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_lightning_version(ckpt: dict[str, Any], source: str) -> None:
    """Lightning's loader needs a ``pytorch-lightning_version`` it can parse (a missing or
    odd one was a ``KeyError`` / ``InvalidVersion`` traceback deep inside it)."""
    from packaging.version import InvalidVersion, Version

    version = ckpt.get("pytorch-lightning_version")
    try:
        Version(version if isinstance(version, str) else "")
    except InvalidVersion:
        raise CheckpointError(
            f"checkpoint {source} is not a Lightning checkpoint: pytorch-lightning_version "
            f"is {quote(version)}"
        ) from None


def _check_records(path: Path) -> None:
    """Refuse, from the zip directory alone, records that would inflate in memory: torch.save
    stores every record uncompressed, and its pickle is small."""
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # torch.load's error is reported with its reason
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"checkpoint {path}: record {quote(record.filename)} is compressed "
                f"({record.compress_size} bytes inflating to {record.file_size}); torch.save "
                "stores records uncompressed (refused: inflating could exhaust memory)"
            )
        if record.filename.endswith(".pkl") and record.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"checkpoint {path}: its pickle {quote(record.filename)} is "
                f"{record.file_size} bytes, more than {MAX_PICKLE_BYTES} (refused)"
            )


def _why_unreadable(path: Path, err: Exception) -> str:
    text = str(err)
    if "Unsupported global" in text or "GLOBAL" in text:
        return "it holds Python objects that could run code on load (refused)"
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80":
        return "a raw pickle, not a PyTorch zip archive (refused: unpickling could run code)"
    if head != b"PK\x03\x04":
        return "not a zip archive (a PyTorch checkpoint is one)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"truncated or corrupt zip archive ({shorten(first)})"


def non_finite_tensors(tree: Any, prefix: str = "") -> list[str]:
    """Dotted names of the floating-point tensors holding NaN or infinity anywhere in
    ``tree`` (a state dict, or a whole checkpoint with its optimizer states)."""
    if isinstance(tree, torch.Tensor):
        finite = not tree.is_floating_point() or bool(torch.isfinite(tree).all())
        return [] if finite else [prefix or "tensor"]
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    bad: list[str] = []
    for key, value in items:
        bad += non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    return bad


def check_finite(tree: Any, source: str) -> None:
    """Raise ``CheckpointError`` naming ``source`` and the first bad tensors if any tensor of
    ``tree`` is non-finite (parameters, buffers such as BatchNorm statistics, optimizer state)."""
    bad = non_finite_tensors(tree)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{source} holds NaN or infinite values in {len(bad)} tensor(s): {shown}; "
            "a model with these weights gives meaningless numbers"
        )


def bounded_size(tree: Any, limit: int) -> int:
    """The size of ``tree`` in characters (strings count their length, other leaves 8),
    counted until it passes ``limit``. Iterative and stopped early, so a structure nested
    thousands deep or sharing one list many times (``repr`` would be exponential) is cheap."""
    size, stack = 0, [tree]
    while stack and size <= limit:
        node = stack.pop()
        if isinstance(node, (str, bytes)):
            size += len(node) + 2
        elif isinstance(node, dict):
            size += 2 + 2 * len(node)
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple, set, frozenset)):
            size += 2 + len(node)
            stack.extend(node)
        else:
            size += 8
    return size


def hyper_parameters(ckpt: dict[str, Any], source: str) -> dict[str, Any]:
    """The ``hyper_parameters`` block, checked for type and size before anything uses it."""
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        raise CheckpointError(f"checkpoint {source}: hyper_parameters is not a mapping")
    problem = shape_problem(hparams)  # before repr: it recurses once per level
    if problem:
        raise CheckpointError(f"checkpoint {source}: the hyper_parameters block {problem}")
    size = bounded_size(hparams, MAX_HPARAMS_CHARS)
    if size > MAX_HPARAMS_CHARS or len(hparams) > 200:
        raise CheckpointError(
            f"checkpoint {source}: hyper_parameters block is too large ({len(hparams)} "
            f"entries, {size} characters; at most 200 and {MAX_HPARAMS_CHARS})"
        )
    for key in hparams:
        if not isinstance(key, str):
            raise CheckpointError(f"checkpoint {source}: hyper-parameter name {quote(key)}")
    return dict(hparams)


# ---------------------------------------------------------------------------------------
# URLs


def _remote_state(url: str, timeout: float) -> dict[str, str] | None:
    """What the server says about ``url`` now (ETag, Last-Modified, size), or None offline."""
    request = urllib.request.Request(url.split("#")[0], method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            headers = response.headers
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return {
        "etag": headers.get("ETag", ""),
        "last_modified": headers.get("Last-Modified", ""),
        "size": headers.get("Content-Length", ""),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_checkpoint(url: str, timeout: float = 30.0) -> Path:
    """Download ``url`` into the cache, or reuse the cached copy if it is still current.

    The cached copy is reused only when the server reports the same ETag, Last-Modified and
    size as when it was downloaded and the file's SHA-256 still matches; otherwise (a server
    without ETags included) the file is fetched again. With ``#sha256=<hex>`` at the end of
    the URL the content must have that digest, and a cached copy with it is used as is.
    Offline, a cached copy is used with a warning that it could not be checked.

    Returns:
        The local file. The log says which file was used and its SHA-256.
    """
    base, _, fragment = url.partition("#")
    pinned = fragment[len("sha256=") :].lower() if fragment.startswith("sha256=") else None
    name = Path(urllib.request.url2pathname(base.rsplit("/", 1)[-1])).name or "checkpoint.ckpt"
    folder = cache_dir() / "checkpoints" / hashlib.sha256(base.encode()).hexdigest()[:16]
    local, meta_file = folder / name, folder / (name + ".json")
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else None
    remote = None
    if meta and local.is_file() and _sha256(local) == meta.get("sha256"):
        if pinned is not None and pinned == meta["sha256"]:
            log.info("checkpoint %s: cached copy %s has the pinned sha256", url, local)
            return local
        # Without an ETag, a file replaced within the same second by one of the same size
        # looks unchanged: such servers are always fetched again.
        remote = _remote_state(base, timeout)
        current = remote is not None and bool(remote["etag"]) and remote == meta.get("remote")
        if current and pinned is None:
            log.info(
                "checkpoint %s: cached copy %s is current (sha256 %s)", url, local, meta["sha256"]
            )
            return local
        if remote is None and pinned is None:
            log.warning(
                "checkpoint %s: server unreachable; using the cached copy %s (sha256 %s), "
                "which could not be checked against the server",
                url,
                local,
                meta["sha256"],
            )
            return local

    folder.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(local.name + ".partial")
    try:
        torch.hub.download_url_to_file(base, str(partial), progress=True)
    except Exception as err:
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"checkpoint {url}: download failed: {shorten(str(err))}") from None
    digest = _sha256(partial)
    if pinned is not None and digest != pinned:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"checkpoint {url}: SHA-256 of the download is {digest}, the URL pins {pinned}"
        )
    os.replace(partial, local)
    remote = _remote_state(base, timeout)
    meta_file.write_text(json.dumps({"url": base, "sha256": digest, "remote": remote}))
    log.info("checkpoint %s: downloaded to %s (sha256 %s)", url, local, digest)
    return local
