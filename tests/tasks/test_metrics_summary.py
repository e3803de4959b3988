"""The console summary of fit: one line per validation, a final table titled with the epoch
and step of the checkpoint saved after that validation."""

from __future__ import annotations

import logging

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tasks import ClassificationTask, DemoClassificationDataModule
from tasks.callbacks import LearningRateLog, MetricsSummary
from tasks.data.base import LoaderOptions


def test_final_table_names_the_checkpoint_epoch_and_one_line_per_validation(tmp_path, caplog):
    dm = DemoClassificationDataModule(root=str(tmp_path / "c"), train_per_class=2, val_per_class=1, image_size=32, resize_size=36, loader=LoaderOptions(batch_size=4))  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"))
    trainer = Trainer(
        accelerator="cpu", max_epochs=3, check_val_every_n_epoch=2, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[MetricsSummary(), LearningRateLog(), checkpoint],
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer.fit(ClassificationTask(num_classes=4, width_mult=0.35), dm)
    text = caplog.text
    (saved,) = [p.stem for p in (tmp_path / "ckpt").glob("*.ckpt")]
    assert saved == "epoch=1-step=4"  # the only validation ran after epoch index 1
    assert "Validation at epoch=1 step=4" in text  # not "epoch 3", where fit stopped
    lines = [line for line in text.splitlines() if "epoch=1 step=4: val/" in line]
    assert len(lines) == 1 and "val/top1" in lines[0]
    assert "train/lr" in trainer.callback_metrics
