"""Every task's checkpoint carries the RNG state, is never written with non-finite values,
and is checked for them when loaded (DetectionTask skipped all three: its hooks did not
call ``super()``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from tasks.checkpoint_hparams import registered_tasks
from tasks.checkpoint_io import CheckpointError

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
