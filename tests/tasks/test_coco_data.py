"""COCO data module: label map, crowd handling, validation errors, SSD augmentation."""

from __future__ import annotations

import json
import logging
import math

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.coco import COCOAnnotations, COCODataModule, COCODetectionDataset
from tasks.data.demo.detection import make_detection_demo
from tasks.data.detection import collate_detection
from tasks.data.io import BadSampleError
from tasks.data.ssd_transforms import (
    RandomIoUCrop,
    RandomZoomOut,
    bbox_params,
    ssd_eval_transforms,
    ssd_train_transforms,
)
from tasks.data.validate import AnnotationError


def write_coco(root, splits=("train2017", "val2017"), num_images=(6, 4), size=64, seed=0):
    """A small COCO-layout set under ``root`` with the official split names."""
    tmp = root / "_gen"
    make_detection_demo(tmp, 3, num_images[0], num_images[1], size, 3, 0.2, 0.5, 0.25, seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for name, split in zip(("train", "val"), splits, strict=True):
        (tmp / name).rename(root / split)
        data = json.loads((tmp / "annotations" / f"instances_{name}.json").read_text())
        # COCO's ids are not contiguous: 1, 2, 3 -> 5, 9, 11
        remap = {1: 5, 2: 9, 3: 11}
        for cat in data["categories"]:
            cat["id"] = remap[cat["id"]]
        for ann in data["annotations"]:
            ann["category_id"] = remap[ann["category_id"]]
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def _edit(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_label_map_and_targets(tmp_path):
    root = write_coco(tmp_path)
    dm = COCODataModule(str(root), image_size=96, augmentation="none",
                        loader=LoaderOptions(batch_size=2))  # fmt: skip
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.category_ids == [5, 9, 11]
    assert dm.class_names == ["circle", "square", "triangle"]
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 96, 96) and images.min() >= -1 and images.max() <= 1
    for t in targets:
        assert t["labels"].dtype == torch.int64 and set(t["labels"].tolist()) <= {0, 1, 2}
        assert t["boxes"].shape == (len(t["labels"]), 4)
        assert bool((t["boxes"] <= 96).all())
        assert t["orig_size"].tolist() == [64, 64]
    # boxes are scaled with the image: 64 -> 96
    ann = COCOAnnotations(root / "annotations" / "instances_train2017.json")
    first = dm._datasets["train"].image_ids[0]
    ds_boxes = dm._datasets["train"][0][1]["boxes"]
    torch.testing.assert_close(ds_boxes, torch.as_tensor(ann.boxes[first]) * 1.5)


def test_crowd_and_empty_images(tmp_path):
    root = write_coco(tmp_path)
    train_file = root / "annotations" / "instances_train2017.json"
    _edit(train_file, lambda d: d["annotations"][0].update(iscrowd=1))
    ann = COCOAnnotations(train_file)
    crowd = json.loads(train_file.read_text())["annotations"][0]
    assert (
        len(ann.boxes[crowd["image_id"]])
        == sum(1 for a in ann.ground_truth["annotations"] if a["image_id"] == crowd["image_id"]) - 1
    )  # the crowd box is kept for the evaluator but is not a training target
    empty = [i for i, b in ann.boxes.items() if len(b) == 0]
    assert empty, "the generator should make some empty images"
    tf = ssd_eval_transforms(64, (0.5,) * 3, (0.5,) * 3)
    with_empty = COCODetectionDataset(root / "train2017", ann, tf, include_empty=True)
    without = COCODetectionDataset(root / "train2017", ann, tf, include_empty=False)
    assert len(with_empty) == len(ann.images) and len(without) == len(ann.images) - len(empty)
    batch = collate_detection([with_empty[with_empty.image_ids.index(empty[0])], with_empty[0]])
    assert batch[1][0]["boxes"].shape == (0, 4)


def test_malformed_annotations_name_the_file(tmp_path):
    """One example on the generated set; test_annotation_validation checks every field."""
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_val2017.json"
    _edit(path, lambda d: d["annotations"][0].update(image_id=999))
    with pytest.raises(AnnotationError, match=r"field 'image_id' 999 names no image") as info:
        COCOAnnotations(path)
    assert str(path) in str(info.value)


def test_degenerate_boxes_leave_training_targets_not_the_ground_truth(tmp_path, caplog):
    root = write_coco(tmp_path)
    path = root / "annotations" / "instances_val2017.json"

    def corrupt(d):
        for ann in d["annotations"][:3]:
            ann["iscrowd"] = 0
        d["annotations"][0]["bbox"] = [1, 1, 0, 5]  # zero width
        d["annotations"][1]["bbox"] = [70, 1, 5, 5]  # entirely right of the 64x64 image
        d["annotations"][2]["bbox"] = [-10, 50, 30, 40]  # reaches outside the image

    _edit(path, corrupt)
    written = json.loads(path.read_text())["annotations"]
    with caplog.at_level(logging.WARNING):
        ann = COCOAnnotations(path)
    assert ann.num_dropped == 2 and ann.num_clipped == 1
    assert "1 zero-size boxes left out of training targets" in caplog.text
    assert "1 boxes outside their image left out of training targets" in caplog.text
    assert "1 training targets clipped to their image" in caplog.text
    assert len(caplog.records) == 1  # one line per file
    # the evaluator scores the file as written, as pycocotools would
    assert [a["bbox"] for a in ann.ground_truth["annotations"]] == [a["bbox"] for a in written]
    clipped_image = written[2]["image_id"]
    assert [0.0, 50.0, 20.0, 64.0] in ann.boxes[clipped_image].tolist()
    assert all(math.isfinite(v) for b in ann.boxes.values() for v in b.flatten())
    total_targets = sum(len(b) for b in ann.boxes.values())
    crowd = sum(a["iscrowd"] for a in written)
    assert total_targets == len(written) - crowd - 2


def test_image_size_mismatch_names_the_file(tmp_path):
    root = write_coco(tmp_path)
    ann = COCOAnnotations(root / "annotations" / "instances_val2017.json")
    first = ann.images[min(ann.images)]
    Image.new("RGB", (10, 10)).save(root / "val2017" / first["file_name"])
    ds = COCODetectionDataset(
        root / "val2017", ann, ssd_eval_transforms(64, (0.5,) * 3, (0.5,) * 3)
    )
    with pytest.raises(BadSampleError, match=first["file_name"]):
        ds[0]


def test_categories_must_agree_between_splits(tmp_path):
    root = write_coco(tmp_path)
    _edit(
        root / "annotations" / "instances_val2017.json",
        lambda d: d["categories"].append({"id": 77, "name": "extra"}),
    )
    with pytest.raises(ValueError, match="categories differ"):
        COCODataModule(str(root)).setup("fit")


def _blocks_image():
    """A 100x100 image with two flat-coloured blocks and their boxes."""
    image = np.full((100, 100, 3), 90, dtype=np.uint8)
    image[10:40, 20:50] = (250, 0, 0)
    image[60:90, 55:95] = (0, 250, 0)
    return image, [[20, 10, 50, 40], [55, 60, 95, 90]], [0, 1]


@pytest.mark.parametrize("transform", ["crop", "zoom", "ssd"])
def test_augmented_boxes_stay_on_their_objects(transform):
    image, boxes, labels = _blocks_image()
    if transform == "crop":
        tf = A.Compose([RandomIoUCrop()], bbox_params=bbox_params(), seed=0)
    elif transform == "zoom":
        tf = A.Compose([RandomZoomOut(p=1.0)], bbox_params=bbox_params(), seed=0)
    else:
        # ssd pipeline without photometric changes or normalisation, to check pixel colours
        tf = A.Compose(
            [RandomZoomOut(2.0, p=0.5), RandomIoUCrop(), A.HorizontalFlip(), A.Resize(64, 64)],
            bbox_params=bbox_params(),
            seed=0,
        )
    colours = {0: (250, 0, 0), 1: (0, 250, 0)}
    seen = 0
    for _ in range(30):
        out = tf(image=image, bboxes=boxes, labels=labels)
        h, w = out["image"].shape[:2]
        for box, label in zip(out["bboxes"], out["labels"], strict=True):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
            assert np.abs(out["image"][cy, cx].astype(int) - colours[int(label)]).max() < 40
            seen += 1
    assert seen > 10


def test_train_pipeline_outputs_normalized_square_images():
    image, boxes, labels = _blocks_image()
    out = ssd_train_transforms(80, (0.5,) * 3, (0.5,) * 3, "ssd")(
        image=image, bboxes=boxes, labels=labels
    )
    assert out["image"].shape == (80, 80, 3) and out["image"].dtype == np.float32
    assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0
    with pytest.raises(ValueError, match="augmentation must be one of"):
        ssd_train_transforms(80, (0.5,) * 3, (0.5,) * 3, "mosaic")  # type: ignore[arg-type]
