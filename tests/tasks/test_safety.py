"""Untrusted checkpoints are refused; a NaN loss stops training cleanly."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from tasks import ClassificationTask, ImageFolderDataModule
from tasks.callbacks import FiniteLossCheck
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.demo.classification import make_classification_demo

CONFIG = Path(__file__).parents[2] / "configs" / "classification_demo_mobilenetv2.yaml"
MARKER = "mobilezoo-test-code-ran"


class _RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, MARKER))


def test_crafted_checkpoint_is_refused_by_the_cli(tmp_path: Path, capsys) -> None:
    evil = tmp_path / "evil.ckpt"
    flag = tmp_path / "flag.txt"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {}, "payload": _RunsCode(flag)}, f)
    with pytest.raises(SystemExit):
        cli_main(["validate", "-c", str(CONFIG), f"--ckpt_path={evil}",
                  f"--data.init_args.root={tmp_path / 'demo'}", "--data.init_args.train_per_class=1",
                  "--data.init_args.val_per_class=1", "--trainer.logger=false"])  # fmt: skip
    assert "could run code" in capsys.readouterr().err
    assert not flag.exists()


class _NaNAfter(ClassificationTask):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.global_step >= 2 else loss


def test_nan_loss_stops_with_the_step_and_saves_nothing_corrupt(tmp_path: Path) -> None:
    make_classification_demo(tmp_path / "data", 2, 4, 1, 40, seed=0)
    ckpt = ModelCheckpoint(
        tmp_path / "ckpt", save_last=True, every_n_train_steps=1, save_on_exception=True
    )
    trainer = Trainer(max_epochs=2, logger=False, enable_progress_bar=False, num_sanity_val_steps=0,
                      callbacks=[FiniteLossCheck(), ckpt])  # fmt: skip
    task = _NaNAfter(num_classes=2, width_mult=0.35)
    data = ImageFolderDataModule(
        str(tmp_path / "data"),
        image_size=32,
        resize_size=36,
        loader=LoaderOptions(batch_size=2),
    )
    with pytest.raises(FloatingPointError, match="training loss became nan at global step 2"):
        trainer.fit(task, data)
    assert all(torch.isfinite(p).all() for p in task.parameters())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert all(
        torch.isfinite(v).all() for v in saved["state_dict"].values() if v.is_floating_point()
    )
