"""A checkpoint cannot exhaust memory: what its hyper-parameters ask for is counted on the
meta device before anything is built, and its tensors are compared with that model before
any of them is read."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks import DetectionTask, MultiTaskTask
from tasks.checkpoints.cost import model_cost
from tasks.cli.command import main as cli_main

ROOT = Path(__file__).parents[2]
DET = ROOT / "configs" / "detection_demo_ssdlite_mobilenetv2.yaml"
SMALL = {"num_classes": 3, "width_mult": 0.35, "image_size": 64}


def _checkpoint(path: Path, task_cls: type = DetectionTask, small: dict | None = None,
                extra: dict[str, torch.Tensor] | None = None, **overrides: Any) -> Path:  # fmt: skip
    """A small task's checkpoint whose hyper-parameters say ``overrides``."""
    small = SMALL if small is None else small
    state = task_cls(**small).state_dict()
    hparams = {"_class_path": f"tasks.{task_cls.__name__}", **small, **overrides}
    torch.save({"state_dict": {**state, **(extra or {})}, "hyper_parameters": hparams,
                "pytorch-lightning_version": "2.6.0"}, path)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("task_cls", "small", "overrides", "named"),
    [
        (DetectionTask, SMALL, {"divisible_by": 100000}, "divisible_by=100000"),
        (DetectionTask, SMALL, {"num_classes": 30000, "width_mult": 4.0}, "num_classes=30000"),
        (MultiTaskTask, {"num_det_classes": 3, "num_seg_classes": 4, "width_mult": 0.35,
                         "image_size": 64}, {"num_det_classes": 1_000_000},
         "num_det_classes=1000000"),
    ],
    ids=["divisible_by", "classes_and_width", "joint_classes"],
)  # fmt: skip
def test_export_refuses_a_model_past_the_memory_bound_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, task_cls: type, small: dict,
    overrides: dict, named: str,
) -> None:  # fmt: skip
    """Each value is within its bounds (or has none); together they ask for 5 GiB to 7 TiB
    of weights, and ``export`` died in the allocator."""
    path = _checkpoint(tmp_path / "big.ckpt", task_cls, small, **overrides)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", str(path), f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0, err
    assert str(path) in err and named in err and "GiB of weights" in err


def test_validate_refuses_a_model_past_the_memory_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _checkpoint(tmp_path / "big.ckpt", divisible_by=100000)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "-c", str(DET), f"--ckpt_path={path}", "--trainer.logger=false"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "divisible_by=100000" in err and str(path) in err


def test_the_zoo_s_models_are_far_inside_the_bound() -> None:
    cost = model_cost(DetectionTask, {"num_classes": 80})
    assert cost.weight_bytes < 2**25 and cost.activation_bytes < 2**28


_LOAD = r"""
import resource, sys
from tasks.cli.command import main
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    main(["export", sys.argv[1], "--output_dir", sys.argv[2]])
except SystemExit as stop:
    print("exit", stop.code)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("grew_mib", (after - before) // 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("form", ["stored", "deflated"])
def test_a_tensor_that_does_not_belong_is_refused_before_it_is_read(
    tmp_path: Path, form: str
) -> None:
    """A 100 MB zero tensor next to the weights (stored, or deflated to 0.1 MB): refused
    naming the file, and the process does not grow by its size (it grew by 5x its size)."""
    extra = {"model.extra": torch.zeros(25_000_000)}
    path = _checkpoint(tmp_path / "padded.ckpt", extra=extra)
    if form == "deflated":
        with (
            zipfile.ZipFile(path) as src,
            zipfile.ZipFile(
                tmp_path / "deflated.ckpt", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1
            ) as dst,
        ):
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info.filename))
        path.unlink()
        path = tmp_path / "deflated.ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(path), str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert "exit 2" in done.stdout, done.stdout + done.stderr[-2000:]
    assert str(path) in done.stderr
    reason = "compressed" if form == "deflated" else "unexpected tensors 'model.extra'"
    assert reason in done.stderr
    grew = int(done.stdout.split("grew_mib")[1])
    assert grew < 60, f"the process grew by {grew} MiB"


def test_a_tensor_of_another_shape_is_named(tmp_path: Path, capsys) -> None:
    state = DetectionTask(**SMALL).state_dict()
    name = next(k for k in state if k.endswith("weight"))
    path = _checkpoint(tmp_path / "odd.ckpt", extra={name: torch.zeros(7, 7)})
    with pytest.raises(SystemExit):
        cli_main(["export", str(path), f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert f"tensor '{name}' has shape (7, 7)" in err and str(path) in err


@pytest.mark.parametrize("form", ["complex", "integer", "sparse"])
def test_a_tensor_of_another_kind_is_named(tmp_path: Path, capsys, form: str) -> None:
    """A complex weight loaded as its real part (NaN in the imaginary part unseen), an
    integer one was cast silently, a sparse one failed inside ``load_state_dict``."""
    state = DetectionTask(**SMALL).state_dict()
    name = next(k for k in state if k.endswith("weight"))
    odd = {"complex": state[name].to(torch.complex64), "integer": state[name].to(torch.int32),
           "sparse": state[name].to_sparse()}[form]  # fmt: skip
    path = _checkpoint(tmp_path / "odd.ckpt", extra={name: odd})
    with pytest.raises(SystemExit):
        cli_main(["export", str(path), f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert f"tensor '{name}' is torch." in err and str(path) in err


def test_an_oversized_pickle_is_refused_from_the_zip_directory(tmp_path: Path, capsys) -> None:
    """Unpickling runs at about 1 MB/s: a 256 MB pickle took minutes; a checkpoint's
    structure (tensors apart) is well under 1 MiB."""
    path = _checkpoint(tmp_path / "fat.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["padding"] = b"x" * (5 * 2**20)
    torch.save(ckpt, path)
    with pytest.raises(SystemExit):
        cli_main(["export", str(path), f"--output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert "its pickle 'fat/data.pkl' is" in err and "more than 4194304" in err
