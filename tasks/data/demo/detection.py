"""A generated detection set in the COCO layout: coloured shapes on textured backgrounds.

``{root}/annotations/instances_{train,val}.json`` and ``{root}/{train,val}/NNNNNN.jpg``,
exactly what ``COCODataModule`` reads for COCO itself. Some images hold no object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.base import LoaderOptions
from tasks.data.coco import COCOAnnotations, COCODataModule
from tasks.data.demo.generated import GeneratedDemo
from tasks.data.demo.shapes import (
    SHAPES,
    SceneOptions,
    draw_shape,
    random_color,
    scene_spec,
    soften,
    textured_background,
)
from tasks.data.ssd_transforms import Augmentation
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD


def _box_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def make_detection_demo(
    root: Path,
    num_classes: int,
    num_train: int,
    num_val: int,
    size: int,
    max_objects: int,
    min_object_size: float,
    max_object_size: float,
    empty_fraction: float,
    seed: int,
) -> None:
    """Write the demo set under ``root`` (see the module docstring).

    Each image gets 1..``max_objects`` shapes (none with probability ``empty_fraction``)
    of random class, colour and side ``min_object_size..max_object_size`` x ``size``,
    overlapping each other by at most 0.2 IoU. Boxes are the shapes' tight boxes.
    """
    rng = np.random.default_rng(seed)
    categories = [
        {"id": i + 1, "name": SHAPES[i], "supercategory": "shape"} for i in range(num_classes)
    ]
    (root / "annotations").mkdir(parents=True)
    ann_id = 1
    for split, count in (("train", num_train), ("val", num_val)):
        folder = root / split
        folder.mkdir()
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i in range(count):
            image_id = len(images) + 1
            image = textured_background(rng, size, size)
            wanted = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
            boxes: list[list[float]] = []
            for _ in range(wanted * 10):  # rejection sampling against heavy overlap
                if len(boxes) == wanted:
                    break
                side = rng.uniform(min_object_size, max_object_size) * size
                w, h = side * rng.uniform(0.8, 1.25), side
                w = min(w, size - 2.0)
                x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
                box = [float(x1), float(y1), float(x1 + w), float(y1 + h)]
                if any(_box_iou(box, other) > 0.2 for other in boxes):
                    continue
                label = int(rng.integers(num_classes))
                draw_shape(image, None, SHAPES[label], tuple(box), random_color(rng))
                boxes.append(box)
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [box[0], box[1], w, h],
                        "area": float(w * h),
                        "iscrowd": 0,
                    }
                )
                ann_id += 1
            file_name = f"{i:06d}.jpg"
            soften(image, rng).save(folder / file_name, quality=92)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


class DemoDetectionDataModule(GeneratedDemo, COCODataModule):
    """The shapes detection demo, generated on first use (deterministic in ``seed``).

    Args:
        root: where the set lives; default ``$MOBILEZOO_CACHE/demo_detection_<hash>``.
        num_classes: shape classes (1 to 6: circle, square, triangle, diamond, cross, ring).
        scene: image count and size, objects per image and their sizes, seed
            (``SceneOptions``; here 3,000 training images by default).
        empty_fraction: share of images without any object.
        image_size, augmentation, zoom_out_ratio, train_include_empty, mean, std,
            predict_dir, loader: see ``COCODataModule``. The defaults are the demo
            of ``configs/detection_demo_ssdlite_mobilenetv2.yaml``: 3,000 training images of
            128x128 (about 25 MB, generated once), flips only, because
            the set is large and varied enough that heavier augmentation only slows a short
            CPU schedule down.
    """

    make = staticmethod(make_detection_demo)

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 3,
        scene: SceneOptions = SceneOptions(num_train=3000),
        empty_fraction: float = 0.1,
        image_size: int = 128,
        augmentation: Augmentation = "flip",
        zoom_out_ratio: float = 2.0,
        train_include_empty: bool = True,
        mean: tuple[float, float, float] = SYMMETRIC_MEAN,
        std: tuple[float, float, float] = SYMMETRIC_STD,
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(batch_size=16),
    ) -> None:
        spec = scene_spec("detection", num_classes, scene, empty_fraction=empty_fraction)
        super().__init__(
            self.demo_root(root, spec), "train", "val", None,
            image_size=image_size, augmentation=augmentation, zoom_out_ratio=zoom_out_ratio,
            train_include_empty=train_include_empty, mean=mean, std=std,
            predict_dir=predict_dir, loader=loader,
        )  # fmt: skip

    def _load(self, split: str) -> COCOAnnotations:
        # ``num_classes`` may be read before prepare_data (e.g. by the task's set-up check).
        self.prepare_data()
        return super()._load(split)
