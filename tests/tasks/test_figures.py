"""Validation images and evaluation figures (TensorBoard + PNG) and ``mobilezoo plot``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from tasks import (
    ClassificationTask,
    DemoClassificationDataModule,
    DemoDetectionDataModule,
    DemoSegmentationDataModule,
    DetectionTask,
    SegmentationTask,
)
from tasks.data.base import LoaderOptions
from tasks.data.demo import SceneOptions
from tasks.viz.figures import EvaluationFigures, image_grid
from tasks.viz.plots import class_ap, plot_main, plot_run, read_scalars


def _validate(task, datamodule, tmp_path: Path) -> Path:
    logger = TensorBoardLogger(str(tmp_path), name="run", version=0)
    trainer = Trainer(
        accelerator="cpu",
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EvaluationFigures(num_images=3)],
        limit_val_batches=1,
    )
    trainer.validate(task, datamodule=datamodule)
    return Path(logger.log_dir)


def _image_tags(run: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return sorted(acc.Tags()["images"])


def test_detection_validate_writes_examples_ap_bars_and_pr_curves(tmp_path):
    dm = DemoDetectionDataModule(root=str(tmp_path / "d"), scene=SceneOptions(num_train=1, num_val=4, generated_size=64), image_size=64, loader=LoaderOptions(batch_size=4))  # fmt: skip
    run = _validate(DetectionTask(num_classes=3, width_mult=0.35, image_size=64), dm, tmp_path)
    for name in ("plots/val_per_class_ap.png", "plots/val_precision_recall.png", "images/val_examples.png"):  # fmt: skip
        assert (run / name).is_file(), name
    assert Image.open(run / "images" / "val_examples.png").size == (3 * 64 + 2 * 4, 64)
    tags = _image_tags(run)
    assert "val_images/0" in tags and "val_plots/precision_recall" in tags


def test_segmentation_validate_writes_confusion_matrix_and_iou_bars(tmp_path):
    dm = DemoSegmentationDataModule(root=str(tmp_path / "s"), train_images=1, val_images=2, generated_size=48, crop_size=48, loader=LoaderOptions(batch_size=2))  # fmt: skip
    run = _validate(SegmentationTask(num_classes=4, width_mult=0.35), dm, tmp_path)
    assert (run / "plots" / "val_confusion_matrix.png").is_file()
    assert (run / "plots" / "val_per_class_iou.png").is_file()
    # ground truth | prediction, side by side
    assert Image.open(run / "images" / "val_examples.png").size[0] == 2 * (2 * 48 + 4) + 4


def test_classification_validate_writes_confusion_matrix(tmp_path):
    dm = DemoClassificationDataModule(root=str(tmp_path / "c"), train_per_class=1, val_per_class=2, image_size=32, resize_size=36, loader=LoaderOptions(batch_size=8))  # fmt: skip
    task = ClassificationTask(num_classes=4, width_mult=0.35)
    run = _validate(task, dm, tmp_path)
    assert (run / "plots" / "val_confusion_matrix.png").is_file()
    assert int(task.last_confmat["val"].sum()) == 8  # every validation image counted once
    from tasks.viz.figures import evaluation_figures

    fig = evaluation_figures(task, "val", dm)["confusion_matrix"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == dm.classes  # names, not 0..3


def test_no_logger_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = DemoClassificationDataModule(root=str(tmp_path / "c"), train_per_class=1, val_per_class=1, image_size=32, resize_size=36)  # fmt: skip
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[EvaluationFigures()])  # fmt: skip
    trainer.validate(ClassificationTask(num_classes=4, width_mult=0.35), datamodule=dm)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_class_ap_averages_defined_precisions_only():
    precision = -np.ones((2, 3, 2, 1, 1))
    precision[:, :, 0, 0, 0] = [[1.0, 0.5, 0.0], [0.5, 0.5, 0.5]]  # class 1: no ground truth
    assert class_ap(precision).tolist() == [pytest.approx(3.0 / 6), -1.0]


def test_image_grid_places_images_in_rows():
    grid = image_grid([np.zeros((10, 20, 3), np.uint8)] * 5, columns=2, gap=2)
    assert grid.shape == (3 * 10 + 2 * 2, 2 * 20 + 2, 3)


def test_plot_draws_the_curves_of_a_run(tmp_path, capsys):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "run"))
    for step in range(5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("val/map", 0.1 * step, step)
    writer.close()
    assert read_scalars(tmp_path / "run")["val/map"] == ([0, 1, 2, 3, 4], pytest.approx([0, 0.1, 0.2, 0.3, 0.4]))  # fmt: skip
    files = plot_run(tmp_path / "run")
    assert sorted(f.name for f in files) == ["curves_train.png", "curves_val.png"]
    plot_main([str(tmp_path / "run"), "--output_dir", str(tmp_path / "png")])
    assert (tmp_path / "png" / "curves_val.png").is_file()
    with pytest.raises(SystemExit) as err:
        plot_main([str(tmp_path / "empty")])
    assert err.value.code == 2
    assert "no TensorBoard event files" in capsys.readouterr().err


def test_examples_are_a_fixed_handful_spread_over_the_set():
    from torch.utils.data import DataLoader, TensorDataset

    callback = EvaluationFigures(num_images=3)
    loader = DataLoader(TensorDataset(torch.arange(10.0)), batch_size=4)
    trainer = type("T", (), {"val_dataloaders": loader})()
    first = callback.fixed_batch(trainer, "val")
    assert first[0].tolist() == [0.0, 4.0, 9.0]  # evenly spread, not the first batch
    assert callback.fixed_batch(trainer, "val") is first  # the same at every validation
