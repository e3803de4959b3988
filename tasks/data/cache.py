"""Where generated demo data lives, and building it exactly once."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_MARKER = ".mobilezoo_complete.json"


def cache_dir() -> Path:
    """``$MOBILEZOO_CACHE``, else ``~/.cache/mobilezoo``."""
    return Path(os.environ.get("MOBILEZOO_CACHE", Path.home() / ".cache" / "mobilezoo"))


def resolve_root(root: str | os.PathLike | None, default_name: str) -> Path:
    """``root`` expanded, or ``cache_dir() / default_name`` when ``root`` is None."""
    return Path(root).expanduser() if root is not None else cache_dir() / default_name


def spec_hash(spec: dict[str, Any]) -> str:
    """Short stable hash of a generator spec, to name its default folder."""
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def generate_once(root: Path, spec: dict[str, Any], build: Callable[[Path], None]) -> bool:
    """Run ``build(tmp_dir)`` and move the result to ``root``, unless ``root`` already holds
    a complete set made from the same ``spec``.

    The set is built in a sibling temporary folder and renamed into place, so an
    interrupted run or a concurrent process never leaves a half-written set behind.

    Returns:
        True when the set was built now.

    Raises:
        FileExistsError: ``root`` exists but was not made by this function with ``spec``.
    """
    marker = root / _MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == spec:
            return False
        raise FileExistsError(
            f"{root} holds a demo set made with other settings "
            f"({marker.read_text().strip()}); delete it or choose another root"
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists and is not a generated demo set; choose another root")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        build(tmp)
        (tmp / _MARKER).write_text(json.dumps(spec, sort_keys=True))
        if root.exists():
            root.rmdir()
        try:
            tmp.rename(root)
        except OSError:
            if not (root / _MARKER).is_file():  # lost a race to another process: theirs is fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True
