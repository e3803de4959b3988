"""How many training boxes the anchors reach: ``best_anchor_iou``, the data module's boxes
at the network input (``COCODataModule.input_boxes``) and the line a detection fit logs,
pinned on the real photo sets (balloon's small balloons: 72 of 255 boxes have no anchor at
IoU 0.5 at 300 px; raccoon's large ones all do)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from heads.anchors import best_anchor_iou
from tasks import COCODataModule, DetectionTask, MultiTaskTask
from tasks.data.coco_joint import COCOJointDataModule

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-data"


def _real(name: str) -> Path:
    root = REAL / name
    if not (root / "annotations" / "instances_train.json").is_file():
        pytest.skip(f"real photo set not found: {root} (see ../shared/real-data/README.md)")
    return root


def test_best_anchor_iou_is_the_highest_iou_with_any_anchor() -> None:
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [50, 50, 60, 80]])
    boxes = torch.tensor([[0.0, 0, 20, 20], [0, 0, 10, 20], [55, 50, 60, 80], [90, 90, 99, 99]])
    best = best_anchor_iou(boxes, anchors)
    torch.testing.assert_close(best, torch.tensor([1.0, 0.5, 0.5, 0.0]))
    # chunks of boxes give the same answer
    torch.testing.assert_close(best_anchor_iou(boxes, anchors, chunk=1), best)
    assert best_anchor_iou(torch.zeros(0, 4), anchors).shape == (0,)


def test_input_boxes_are_the_training_boxes_in_network_input_pixels() -> None:
    root = _real("balloon")
    data = COCODataModule(str(root), "train", "val", image_size=300)
    boxes = data.input_boxes("train")
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert boxes.shape == (len(coco["annotations"]), 4)
    # the first image's first box, scaled by hand from its COCO [x, y, w, h]
    image = coco["images"][0]
    x, y, w, h = next(a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"])
    sx, sy = 300 / image["width"], 300 / image["height"]
    expected = torch.tensor([x * sx, y * sy, (x + w) * sx, (y + h) * sy])
    assert torch.isclose(boxes, expected, atol=1e-3).all(dim=1).any()
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 300


def test_fit_warns_when_anchors_miss_small_boxes_and_says_how_many() -> None:
    data = COCODataModule(str(_real("balloon")), "train", "val", image_size=300)
    data.setup("fit")
    task = DetectionTask(num_classes=1, image_size=300)
    with pytest.warns(UserWarning, match=r"183 of 255 training boxes \(72%\).*the other 72 "):
        task.setup_data(data, "fit")


def test_fit_only_reports_coverage_when_every_box_has_an_anchor(caplog) -> None:
    data = COCODataModule(str(_real("raccoon")), "train", "val", image_size=300)
    data.setup("fit")
    task = DetectionTask(num_classes=1, image_size=300)
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        task.setup_data(data, "fit")
    assert "173 of 173 training boxes (100%) overlap an anchor at IoU >= 0.5" in caplog.text


def test_the_joint_model_reports_its_detector_s_coverage() -> None:
    data = COCOJointDataModule(str(_real("balloon")), "train", "val", image_size=300)
    data.setup("fit")
    task = MultiTaskTask(num_det_classes=1, num_seg_classes=2, image_size=300)
    with pytest.warns(UserWarning, match=r"183 of 255 training boxes"):
        task.setup_data(data, "fit")


def test_boxes_between_the_anchors_but_not_small_get_an_info_line(caplog) -> None:
    # 3:1 boxes of 200 x 20 px at 300: larger than two cells of the 19 x 19 map (2 x 16 px),
    # but no TF anchor (ratios up to 3:1, none that thin and long) overlaps them at IoU 0.5
    boxes = torch.tensor([[40.0, 100, 240, 120], [50.0, 200, 250, 220]])
    task = DetectionTask(num_classes=1, image_size=300)
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("error")
        task.report_anchor_coverage(boxes, 300)
    assert "0 of 2 training boxes (0%)" in caplog.text
    assert "the other 2 (median side 63 px)" in caplog.text
    assert "anchor_layout 'torchvision'" in caplog.text
