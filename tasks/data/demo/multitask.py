"""A generated set with boxes and masks, in the COCO layout: shapes on textured backgrounds.

``{root}/annotations/instances_{train,val}.json`` (each object with ``bbox`` and
``segmentation``: polygons, and compressed RLE for the ring, whose hole a polygon cannot
hold) and ``{root}/{train,val}/NNNNNN.jpg``: exactly what ``COCOJointDataModule`` reads for
COCO itself, so the demo runs the real mask rendering. Objects may overlap a little; they
are drawn largest first, the order in which the data module's overlap rule paints them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from tasks.data.base import LoaderOptions
from tasks.data.coco import COCOAnnotations
from tasks.data.coco_joint import COCOJointDataModule
from tasks.data.demo.detection import _box_iou
from tasks.data.demo.generated import GeneratedDemo
from tasks.data.demo.segmentation import class_color
from tasks.data.demo.shapes import (
    SHAPES,
    SceneOptions,
    draw_shape,
    scene_spec,
    shape_polygon,
    soften,
    textured_background,
)
from tasks.data.ssd_transforms import Augmentation
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD


def _segmentation(shape: str, box: tuple[float, float, float, float], size: int) -> Any:
    """COCO ``segmentation`` of a shape: one polygon, or compressed RLE for the ring."""
    if shape != "ring":
        return [[float(v) for xy in shape_polygon(shape, box) for v in xy]]
    layer = np.zeros((size, size), dtype=np.uint8)
    draw_shape(Image.new("RGB", (size, size)), layer, shape, box, (0, 0, 0), 1)
    rle = mask_utils.encode(np.asfortranarray(layer))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def make_multitask_demo(
    root: Path,
    num_classes: int,
    num_train: int,
    num_val: int,
    size: int,
    max_objects: int,
    min_object_size: float,
    max_object_size: float,
    seed: int,
) -> None:
    """Write the demo set under ``root`` (see the module docstring).

    Each image gets 1..``max_objects`` shapes of random class and side
    ``min_object_size..max_object_size`` x ``size`` (box IoU between objects <= 0.3), each
    in a colour from its class's band of hues.
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
            image_id = i + 1
            image = textured_background(rng, size, size)
            wanted = int(rng.integers(1, max_objects + 1))
            objects: list[tuple[list[float], int]] = []
            for _ in range(wanted * 10):  # rejection sampling against heavy overlap
                if len(objects) == wanted:
                    break
                side = rng.uniform(min_object_size, max_object_size) * size
                w, h = min(side * rng.uniform(0.8, 1.25), size - 2.0), side
                x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
                box = [float(x1), float(y1), float(x1 + w), float(y1 + h)]
                if any(_box_iou(box, other) > 0.3 for other, _ in objects):
                    continue
                objects.append((box, int(rng.integers(num_classes))))
            objects.sort(key=lambda o: -(o[0][2] - o[0][0]) * (o[0][3] - o[0][1]))
            for box, label in objects:
                colour = class_color(rng, label + 1, num_classes + 1)
                draw_shape(image, None, SHAPES[label], tuple(box), colour)
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": label + 1,
                        "bbox": [box[0], box[1], w, h],
                        "area": float(w * h),
                        "iscrowd": 0,
                        "segmentation": _segmentation(SHAPES[label], tuple(box), size),
                    }
                )
                ann_id += 1
            file_name = f"{i:06d}.jpg"
            soften(image, rng).save(folder / file_name, quality=92)
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


class DemoMultiTaskDataModule(GeneratedDemo, COCOJointDataModule):
    """The shapes demo with boxes and masks, generated on first use (deterministic in
    ``seed``).

    Args:
        root: where the set lives; default ``$MOBILEZOO_CACHE/demo_multitask_<hash>``.
        num_classes: shape classes (1 to 6: circle, square, triangle, diamond, cross, ring);
            the masks have ``num_classes + 1`` classes (background first).
        scene: image count and size, objects per image and their sizes, seed
            (``SceneOptions``).
        image_size, augmentation, zoom_out_ratio, mean, std, predict_dir, loader: see
            ``COCODataModule``. The defaults are the demo of
            ``configs/multitask_demo_ssdlite_deeplabv3_mobilenetv2.yaml``.
    """

    make = staticmethod(make_multitask_demo)

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 3,
        scene: SceneOptions = SceneOptions(),
        image_size: int = 128,
        augmentation: Augmentation = "flip",
        zoom_out_ratio: float = 2.0,
        mean: tuple[float, float, float] = SYMMETRIC_MEAN,
        std: tuple[float, float, float] = SYMMETRIC_STD,
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(batch_size=16),
    ) -> None:
        spec = scene_spec("multitask", num_classes, scene)
        super().__init__(
            self.demo_root(root, spec), "train", "val", None,
            image_size=image_size, augmentation=augmentation, zoom_out_ratio=zoom_out_ratio,
            train_include_empty=True, mean=mean, std=std, predict_dir=predict_dir, loader=loader,
        )  # fmt: skip

    def _load(self, split: str) -> COCOAnnotations:
        # ``num_classes`` may be read before prepare_data (e.g. by the task's set-up check).
        self.prepare_data()
        return super()._load(split)
