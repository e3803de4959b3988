"""Every task's checkpoint carries the RNG state, is never written with non-finite values,
and is checked for them when loaded (DetectionTask skipped all three: its hooks did not
call ``super()``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from tasks import DetectionTask
from tasks.checkpoints.io import CheckpointError
from tasks.cli.command import main as cli_main
from tasks.data.demo.shapes import SHAPES
from tasks.task_classes import registered_tasks

CONFIGS = Path(__file__).parents[2] / "configs"

#: small arguments of every registered task
SMALL = {
    "ClassificationTask": {"num_classes": 3, "width_mult": 0.35},
    "DetectionTask": {"num_classes": 2, "width_mult": 0.35, "image_size": 64},
    "SegmentationTask": {"num_classes": 3, "width_mult": 0.35},
    "MultiTaskTask": {"num_det_classes": 2, "num_seg_classes": 3, "width_mult": 0.35,
                      "image_size": 64},
}  # fmt: skip


def test_every_registered_task_is_covered() -> None:
    assert {cls.__name__ for cls in registered_tasks().values()} == set(SMALL)


def _connected(name: str):  # type: ignore[no-untyped-def]
    task_cls = next(c for c in registered_tasks().values() if c.__name__ == name)
    task = task_cls(**SMALL[name])
    trainer = Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    trainer.strategy.connect(task)
    return task, trainer


@pytest.mark.parametrize("name", sorted(SMALL))
def test_checkpoints_carry_the_rng_state_and_loading_checks_finiteness(
    tmp_path: Path, name: str
) -> None:
    task, trainer = _connected(name)
    torch.manual_seed(123)
    path = tmp_path / "task.ckpt"
    trainer.save_checkpoint(path)
    expected = torch.rand(3)
    ckpt = torch.load(path, weights_only=True)
    assert "torch_rng_state" in ckpt
    task.on_load_checkpoint(ckpt)  # puts the saved RNG state back
    assert torch.equal(torch.rand(3), expected)
    weight = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][weight].view(-1)[0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        task.on_load_checkpoint(ckpt)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_no_callback_can_write_a_non_finite_checkpoint(tmp_path: Path, name: str) -> None:
    """Every save (any callback, ``save_on_exception`` included) passes the task's
    ``on_save_checkpoint``: a non-finite state is refused and no file is written."""
    task, trainer = _connected(name)
    with torch.no_grad():
        next(task.parameters()).view(-1)[0] = float("inf")
    path = tmp_path / "task.ckpt"
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        trainer.save_checkpoint(path)
    assert not path.exists()


def _detector_with_categories(path: Path, ids: list[int], names: list[str]) -> Path:
    task = DetectionTask(num_classes=3, width_mult=0.35, image_size=64)
    hparams = {"_class_path": "tasks.DetectionTask", "num_classes": 3, "width_mult": 0.35,
               "image_size": 64}  # fmt: skip
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams,
                "pytorch-lightning_version": "2.6.0", "category_ids": ids,
                "class_names": names}, path)  # fmt: skip
    return path


def _validate(tmp_path: Path, ckpt: Path) -> None:
    cli_main(["validate", "-c", str(CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"),
              f"--ckpt_path={ckpt}", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", f"--data.init_args.root={tmp_path / 'demo'}",
              "--data.init_args.scene.num_train=2", "--data.init_args.scene.num_val=2",
              "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
              "--model.init_args.image_size=64"])  # fmt: skip


@pytest.mark.slow
def test_a_detector_s_categories_are_matched_with_the_data_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The demo data has ids 1, 2, 3: a checkpoint of the same classes numbered 5, 17, 42
    was scored with its own ids (mAP 0.0, no word). Renumbered with the same names: the
    data's ids, logged; other names: one line naming both, exit 2."""
    monkeypatch.setattr(sys, "argv", ["mobilezoo"])
    names = list(SHAPES[:3])
    renumbered = _detector_with_categories(tmp_path / "renumbered.ckpt", [5, 17, 42], names)
    _validate(tmp_path, renumbered)
    assert "category ids [5, 17, 42] in the checkpoint are [1, 2, 3] in the data" in caplog.text
    other = _detector_with_categories(tmp_path / "other.ckpt", [1, 2, 3], ["cat", "dog", "cow"])
    with pytest.raises(SystemExit) as exit_info:
        _validate(tmp_path, other)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and str(other) in err
    assert "named ['cat', 'dog', 'cow']" in err and str(names) in err
