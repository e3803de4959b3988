"""Two processes (DDP on CPU, gloo) give the same validation metrics as one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from tasks import ClassificationTask, ImageFolderDataModule
from tasks.data.base import LoaderOptions
from tasks.data.demo.classification import make_classification_demo


def _validate(
    task: ClassificationTask, data: ImageFolderDataModule, devices: int
) -> dict[str, float]:
    trainer = Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    return {k: float(v) for k, v in trainer.validate(task, data, verbose=False)[0].items()}


@pytest.mark.slow
def test_two_process_validation_equals_one_process(tmp_path: Path) -> None:
    # 7 validation images: a padded sampler would evaluate one of them twice.
    make_classification_demo(tmp_path / "data", 2, 1, 4, 40, seed=1)
    (tmp_path / "data" / "val" / "circle" / "0003.jpg").unlink()
    seed_everything(0)
    task = ClassificationTask(num_classes=2, width_mult=0.35)
    with torch.no_grad():  # a head that separates the classes a little, so top-1 is not flat
        task.model.head.classifier[1].weight.normal_(0, 1.0)
    data = ImageFolderDataModule(
        str(tmp_path / "data"),
        image_size=32,
        resize_size=36,
        loader=LoaderOptions(batch_size=2),
    )
    one = _validate(task, data, devices=1)
    two = _validate(task, data, devices=2)
    assert 0 < one["val/top1"] < 1
    assert two["val/top1"] == pytest.approx(one["val/top1"], abs=1e-7)
    # Every metric, the loss included (Lightning's sync_dist mean gave x7/6 here).
    assert two.keys() == one.keys() and "val/loss" in one
    for name in one:
        assert two[name] == pytest.approx(one[name], rel=1e-6, abs=1e-7), name
    # The accuracy is a whole number of hits out of exactly 7 images.
    assert round(one["val/top1"] * 7, 5) == round(one["val/top1"] * 7)
