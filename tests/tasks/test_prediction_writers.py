"""Prediction writers: one output per input, relative paths kept, legible drawings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from lightning.pytorch import Trainer
from PIL import Image
from torch.utils.data import DataLoader

from heads import PostprocessOptions
from tasks import ClassificationTask, DetectionTask, SegmentationTask
from tasks.data.predict import PredictImageDataset, collate_predict
from tasks.data.transforms import normalize
from tasks.viz.draw import class_colour, draw_detections, text_colour
from tasks.writers.multitask import MultiTaskPredictionWriter
from tasks.writers.predictions import (
    ClassificationPredictionWriter,
    DetectionPredictionWriter,
    SegmentationPredictionWriter,
    detection_report,
    output_stems,
)


def _folder(root: Path) -> Path:
    """``a/x.jpg``, ``a/x.png`` (same stem) and ``b.jpg``, 40x48 pixels."""
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    for name in ("a/x.jpg", "a/x.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / name)
    return root


def _predict(task, writer, folder: Path) -> None:
    transform = A.Compose([A.Resize(64, 64), normalize((0.5,) * 3, (0.5,) * 3)])
    loader = DataLoader(
        PredictImageDataset(folder, transform), batch_size=1, collate_fn=collate_predict
    )
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer]
    )
    trainer.predict(task, dataloaders=loader, return_predictions=False)


def test_output_stems_keep_the_relative_path_and_separate_shared_stems(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "a" / "x.png", tmp_path / "b.jpg"]
    paths.append(tmp_path / "a" / "x_jpg.bmp")  # collides with the disambiguated name
    stems = output_stems([str(p) for p in paths], tmp_path)
    assert [stems[str(p)] for p in paths] == ["a/x_jpg", "a/x_png", "b", "a/x_jpg_2"]


def test_detection_writer_one_image_per_input_and_relative_names(tmp_path):
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out"
    task = DetectionTask(
        num_classes=3, width_mult=0.35, image_size=64,
        postprocess=PostprocessOptions(score_threshold=0.0),
    )  # fmt: skip
    _predict(task, DetectionPredictionWriter(str(out), draw_threshold=0.0), folder)
    drawn = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert drawn == ["a/x_jpg.jpg", "a/x_png.jpg", "b.jpg"]
    results = json.loads((out / "detections.json").read_text())
    assert {r["file_name"] for r in results} == {"a/x.jpg", "a/x.png", "b.jpg"}
    assert Image.open(out / "a" / "x_png.jpg").size == (48, 40)  # original size


def test_segmentation_writer_one_mask_per_input(tmp_path):
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out"
    task = SegmentationTask(num_classes=4, width_mult=0.35)
    _predict(task, SegmentationPredictionWriter(str(out)), folder)
    masks = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert masks == ["a/x_jpg.png", "a/x_png.png", "b.png"]
    assert (out / "a" / "x_png_overlay.jpg").is_file()


def test_classification_writer_rows_name_relative_paths(tmp_path):
    folder = _folder(tmp_path / "in")
    out = tmp_path / "out"
    _predict(ClassificationTask(num_classes=4, width_mult=0.35), ClassificationPredictionWriter(str(out)), folder)  # fmt: skip
    with open(out / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:]] == ["a/x.jpg", "a/x.png", "b.jpg"]


def test_writer_refuses_to_write_into_the_predict_folder(tmp_path):
    folder = _folder(tmp_path / "in")
    task = DetectionTask(num_classes=3, width_mult=0.35, image_size=64)
    with pytest.raises(ValueError, match="is the predict folder itself"):
        _predict(task, DetectionPredictionWriter(str(folder)), folder)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: DetectionPredictionWriter(draw_threshold=1.5), "draw_threshold"),
        (lambda: SegmentationPredictionWriter(alpha=-0.1), "alpha"),
        (lambda: MultiTaskPredictionWriter(draw_threshold=-1.0), "draw_threshold"),
        (lambda: MultiTaskPredictionWriter(alpha=2.0), "alpha"),
    ],
)
def test_writers_refuse_a_threshold_or_weight_outside_0_1(make, name):
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\], got "):
        make()


def test_report_says_what_was_drawn_and_how_to_see_more():
    line = detection_report(total=12, drawn=0, images=3, threshold=0.3, best=0.081)
    assert "12 detections on 3 images; 0 drawn at score >= 0.3" in line
    assert "highest score is 0.081" in line and "--draw_threshold 0.08" in line
    assert "highest" not in detection_report(12, 5, 3, 0.3, 0.9)


def test_labels_sit_on_a_tag_of_the_class_colour():
    image = np.zeros((60, 80, 3), np.uint8)
    drawn = draw_detections(image, [[10, 30, 70, 55]], [2], [0.9], ["circle", "square", "ring"])
    colour = class_colour(2)
    assert tuple(drawn[29, 11]) == colour  # the tag right above the box's top-left corner
    assert tuple(drawn[45, 10]) == colour  # the outline
    assert class_colour(1) != class_colour(2)
    assert text_colour((255, 255, 0)) == (0, 0, 0) and text_colour((0, 0, 128)) == (255,) * 3


def test_every_data_module_names_its_predict_folder_predict_dir(tmp_path):
    import inspect

    from lightning.pytorch import LightningDataModule

    import tasks

    modules = [getattr(tasks, name) for name in tasks.__all__]
    modules = [m for m in modules if isinstance(m, type) and issubclass(m, LightningDataModule)]
    assert len(modules) >= 10  # the joint (detection + segmentation) modules too
    for module in modules:  # declared by the module or by the base its **kwargs go to
        inits = [vars(c)["__init__"] for c in module.__mro__ if "__init__" in vars(c)]
        takes = any("predict_dir" in inspect.signature(f).parameters for f in inits)
        assert takes, module.__name__
