"""Fuzzing the checkpoint loader: corrupted and hostile checkpoints give a load or one
``CheckpointError``, never another exception, in bounded time.

A seeded generator mutates small valid checkpoints: truncation, random bytes, zip sizes,
tensors of other dtypes / shapes / layouts / values, odd hyper-parameters, nested and
shared structures, missing or retyped fields. Each input goes through the loading path of
``mobilezoo export`` (``tasks.export.loading.load_checkpoint``: read, hyper-parameters,
cost, shapes, finiteness, build, load) after the CLI's Lightning-version check.

``MOBILEZOO_FUZZ_EXAMPLES`` sets the number of inputs (default 16, a few seconds);
``MOBILEZOO_FUZZ_SEED`` the seed.
"""

from __future__ import annotations

import io
import os
import random
import struct
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks import ClassificationTask, DetectionTask
from tasks.checkpoints.io import CheckpointError, check_lightning_version, read_checkpoint
from tasks.export.loading import load_checkpoint

EXAMPLES = int(os.environ.get("MOBILEZOO_FUZZ_EXAMPLES", "16"))
SEED = int(os.environ.get("MOBILEZOO_FUZZ_SEED", "0"))
SECONDS_PER_INPUT = 60.0  # generous: the CI machine is shared; a hang would take hours

_BASES = {
    "ClassificationTask": (ClassificationTask, {"num_classes": 3, "width_mult": 0.35}),
    "DetectionTask": (DetectionTask, {"num_classes": 2, "width_mult": 0.35, "image_size": 64}),
}


def _base(name: str) -> dict[str, Any]:
    task_cls, kwargs = _BASES[name]
    task = task_cls(**kwargs)
    return {"state_dict": task.state_dict(), "pytorch-lightning_version": "2.6.0",
            "epoch": 0, "global_step": 3,
            "hyper_parameters": {"_class_path": f"tasks.{name}", **kwargs}}  # fmt: skip


def _odd_value(rng: random.Random) -> Any:
    deep: Any = 0
    for _ in range(rng.choice([10, 100, 250])):  # torch.save recurses (see _deep_pickle)
        deep = [deep]
    shared: Any = [0]
    for _ in range(60):
        shared = [shared, shared]  # 2**60 leaves, a few hundred pickle bytes
    return rng.choice([
        None, -1, 0, 1, 2**63, -(2**70), 1e308, float("nan"), float("inf"), True, "", "x" * 5000,
        "../../etc/passwd", [], {}, [1, 2, 3], {"a": {"b": []}}, (1.0,), deep, shared,
        b"\x00\xff", 0.5, 3.9, 100000, 30000, 8, 16, 32, "tf", "torch", "softmax",
    ])  # fmt: skip


def _odd_tensor(rng: random.Random, like: torch.Tensor) -> torch.Tensor:
    shape = tuple(like.shape)
    kind = rng.choice(["dtype", "shape", "scalar", "empty", "nan", "expand", "sparse", "half"])
    if kind == "dtype":
        dtype = rng.choice([torch.int32, torch.bool, torch.complex64, torch.uint8, torch.int64])
        return torch.zeros(shape, dtype=dtype)
    if kind == "shape":
        return torch.zeros(*[d + rng.choice([-1, 1, 7]) for d in shape] or [3])
    if kind == "scalar":
        return torch.tensor(1.0)
    if kind == "empty":
        return torch.zeros(0)
    if kind == "nan":
        bad = like.clone().float() if like.is_floating_point() else like.clone()
        if bad.is_floating_point() and bad.numel():
            bad.view(-1)[0] = float("nan")
        return bad
    if kind == "expand":
        return torch.zeros(1).expand(10**9)  # a billion elements on four bytes
    if kind == "sparse":
        return torch.zeros(shape or (1,)).to_sparse()
    return like.to(torch.float16) if like.is_floating_point() else like


def _mutate_dict(rng: random.Random, ckpt: dict[str, Any]) -> str:
    kind = rng.choice(["hparam", "hparam", "tensor", "tensor", "remove", "retype", "structure",
                       "keys", "extra"])  # fmt: skip
    state, hparams = ckpt["state_dict"], ckpt["hyper_parameters"]
    if kind == "hparam":
        key = rng.choice([*hparams, "_class_path", "divisible_by", "padding", "dropout",
                          "frozen_stages", "unknown_key", "weights", "weights_backbone"])  # fmt: skip
        hparams[key] = _odd_value(rng)
        return f"hparam {key}"
    if kind == "tensor":
        name = rng.choice(list(state))
        state[name] = _odd_tensor(rng, state[name])
        return "tensor"
    if kind == "remove":
        key = rng.choice(["state_dict", "hyper_parameters", "pytorch-lightning_version", "tensor"])
        if key == "tensor":
            del state[rng.choice(list(state))]
        else:
            del ckpt[key]
        return f"remove {key}"
    if kind == "retype":
        key = rng.choice(["state_dict", "hyper_parameters", "pytorch-lightning_version"])
        ckpt[key] = _odd_value(rng)
        return f"retype {key}"
    if kind == "structure":
        key = rng.choice(["callbacks", "optimizer_states", "loops", "category_ids"])
        ckpt[key] = _odd_value(rng)
        return f"structure {key}"
    if kind == "keys":
        state[rng.choice([7, ("a",), "model.x" * 50])] = torch.zeros(2)
        return "keys"
    state["model.extra"] = torch.zeros(rng.choice([1, 10**6]))
    return "extra"


def _patch_sizes(rng: random.Random, data: bytearray) -> None:
    """Declare other (huge) sizes in the zip's central directory and local headers."""
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        start = 0
        while (at := data.find(signature, start)) >= 0 and rng.random() < 0.8:
            data[at + offset : at + offset + 4] = struct.pack("<I", rng.choice(
                [0xFFFFFFFF, 2**31, 0, 1]))  # fmt: skip
            start = at + 4


def _text(value: str) -> bytes:
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def _deep_pickle(base: bytes, depth: int) -> bytes:
    """``base`` (a torch.save zip) whose pickle is replaced by a hand-written one holding a
    list nested ``depth`` deep as its task class (deeper than torch.save can write)."""
    nested = b"]" * depth + b"a" * (depth - 1)
    pickle = (b"\x80\x02}(" + _text("state_dict") + b"}" + _text("pytorch-lightning_version")
              + _text("2.6.0") + _text("hyper_parameters") + b"}(" + _text("_class_path")
              + nested + b"uu.")  # fmt: skip
    source, out = zipfile.ZipFile(io.BytesIO(base)), io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            data = pickle if info.filename.endswith("data.pkl") else source.read(info)
            target.writestr(info.filename, data)
    return out.getvalue()


def _inputs(seed: int, count: int):  # type: ignore[no-untyped-def]
    """``count`` (description, bytes) pairs."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    bases = {name: _base(name) for name in _BASES}
    for _ in range(count):
        name = rng.choice(list(bases))
        ckpt = {k: (dict(v) if isinstance(v, dict) else v) for k, v in bases[name].items()}
        what = _mutate_dict(rng, ckpt) if rng.random() < 0.6 else "valid"
        buffer = io.BytesIO()
        torch.save(ckpt if rng.random() > 0.02 else [ckpt], buffer)
        data = bytearray(buffer.getvalue())
        byte_kind = rng.choice(["none", "none", "truncate", "flip", "sizes", "deep"])
        if byte_kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif byte_kind == "flip":
            for _ in range(rng.choice([1, 4, 64])):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif byte_kind == "sizes":
            _patch_sizes(rng, data)
        elif byte_kind == "deep":
            data = bytearray(_deep_pickle(bytes(data), rng.choice([1000, 100_000])))
        yield f"{name}: {what}, bytes {byte_kind}", bytes(data)


def _load(path: Path) -> None:
    """The loading path of the CLI (``mobilezoo export``, and the version check of the
    Lightning subcommands)."""
    check_lightning_version(read_checkpoint(path), str(path))
    load_checkpoint(path)


def test_hostile_checkpoints_load_or_give_one_checkpoint_error(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    failures = []
    for index, (what, data) in enumerate(_inputs(SEED, EXAMPLES)):
        path = tmp_path / f"fuzz_{index}.ckpt"
        path.write_bytes(data)
        start = time.monotonic()
        try:
            _load(path)
            outcomes["loaded"] += 1
        except CheckpointError as err:
            assert "\n" not in str(err).strip(), (what, str(err)[:500])
            outcomes["CheckpointError"] += 1
        except Exception as err:  # the point: no other exception type
            failures.append(f"#{index} {what}: {type(err).__name__}: {str(err)[:200]}")
        elapsed = time.monotonic() - start
        assert elapsed < SECONDS_PER_INPUT, f"#{index} {what} took {elapsed:.0f} s"
        path.unlink()
    print(f"fuzz: {EXAMPLES} inputs (seed {SEED}): {dict(outcomes)}; {len(failures)} failures")
    assert not failures, "\n".join(failures[:20])


@pytest.mark.parametrize("seed", [1, 2])
def test_the_generator_is_seeded(seed: int) -> None:
    first = [d for _, d in _inputs(seed, 3)]
    assert first == [d for _, d in _inputs(seed, 3)]


def _shared(levels: int) -> list:
    value: list = [0]
    for _ in range(levels):
        value = [value, value]
    return value


@pytest.mark.slow
@pytest.mark.parametrize("case", ["class_path_list", "deep_pickle", "deep_quoted", "shared_hparam"])
def test_what_fuzzing_found(tmp_path: Path, case: str) -> None:
    """Inputs the fuzzer found: ``_class_path`` a list (TypeError: unhashable), a list
    nested 100,000 deep (RecursionError in the size check's ``repr``), 15,000 deep (within
    the size limit: RecursionError quoting it in the error), one list shared at 60 levels as
    a hyper-parameter (``repr`` of 2**60 items: never returns)."""
    ckpt = _base("ClassificationTask")
    if case == "class_path_list":
        ckpt["hyper_parameters"]["_class_path"] = ["tasks.ClassificationTask"]
    if case == "shared_hparam":
        ckpt["hyper_parameters"]["dropout"] = _shared(60)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    data = buffer.getvalue()
    if case.startswith("deep"):
        data = _deep_pickle(data, 100_000 if case == "deep_pickle" else 15_000)
    path = tmp_path / f"{case}.ckpt"
    path.write_bytes(data)
    script = f"from tests.tasks.test_checkpoint_fuzz import _load; _load({str(path)!r})"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=150)  # a hang fails here  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("tasks.checkpoints.io.CheckpointError: "), done.stderr[-1500:]
