"""COCO with both targets: boxes and a semantic mask per image, from one instances JSON.

The mask is rendered from each annotation's ``segmentation`` (polygons, uncompressed or
compressed RLE) with pycocotools. Values: 0 = background, ``1 + label`` for an object of
contiguous label ``label`` (so the mask has ``num_classes + 1`` classes), 255 = void.

Rule for overlapping instances: objects are painted largest first (by mask area), so a
smaller object lying on a larger one stays visible, as it does in the picture. Crowd
regions (``iscrowd=1``) are void (255) where no single object covers them: an object is
known, a crowd pixel is not. Annotations without a ``segmentation`` fill their box.

Training masks travel through the SSD augmentation with the image and boxes (zoom-out
fills the canvas with background, the min-IoU crop and flip move them). Evaluation masks
stay at the image's size on disk: the task upsamples its logits to that size, so mIoU is
counted on the original pixels, as the official protocols do.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import albumentations as A
import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor

from tasks.data.coco import COCOAnnotations, COCODataModule, COCODetectionDataset, Target
from tasks.data.io import BadSampleError, read_image

IGNORE_INDEX = 255


def instance_mask(segmentation: Any, bbox: list[float], height: int, width: int) -> np.ndarray:
    """One annotation's ``[H, W]`` bool mask from polygons or RLE (box when ``None``)."""
    if not segmentation:
        x, y, w, h = bbox
        out = np.zeros((height, width), dtype=bool)
        out[round(y) : round(y + h), round(x) : round(x + w)] = True
        return out
    if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
        if isinstance(rle["counts"], str):
            rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def semantic_mask(
    annotations: list[dict[str, Any]], label_of: dict[int, int], height: int, width: int
) -> np.ndarray:
    """``[H, W]`` uint8: 0 background, ``1 + label`` objects (largest painted first), 255 crowd.

    Args:
        annotations: the image's cleaned COCO annotations (crowd included).
        label_of: COCO category id -> contiguous label.
    """
    out = np.zeros((height, width), dtype=np.uint8)
    objects, crowd = [], np.zeros((height, width), dtype=bool)
    for ann in annotations:
        m = instance_mask(ann.get("segmentation"), ann["bbox"], height, width)
        if int(ann.get("iscrowd", 0)):
            crowd |= m
        else:
            objects.append((int(m.sum()), label_of[int(ann["category_id"])], m))
    covered = np.zeros((height, width), dtype=bool)
    # Stable sort: among equal areas the annotation order decides (later on top).
    for _, label, m in sorted(objects, key=lambda o: -o[0]):
        out[m] = 1 + label
        covered |= m
    out[crowd & ~covered] = IGNORE_INDEX
    return out


class COCOJointDataset(COCODetectionDataset):
    """``COCODetectionDataset`` whose targets also hold ``mask``.

    Args:
        image_dir, annotations, transform, include_empty: see ``COCODetectionDataset``.
        eval_masks: keep the mask at the size on disk (evaluation) instead of moving it
            through ``transform`` with the image (training).

    Target: the detection keys plus ``mask`` ``[h, w]`` int64 (``h, w`` = the transformed
    image's size in training, the size on disk with ``eval_masks``).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotations: COCOAnnotations,
        transform: A.Compose,
        include_empty: bool = True,
        eval_masks: bool = False,
    ) -> None:
        super().__init__(image_dir, annotations, transform, include_empty)
        self.eval_masks = eval_masks
        self._per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in annotations.ground_truth["annotations"]:
            self._per_image[int(ann["image_id"])].append(ann)
        self._label_of = {c: i for i, c in enumerate(annotations.category_ids)}

    def mask(self, image_id: int) -> np.ndarray:
        """The semantic mask of ``image_id`` at its size on disk."""
        info = self.annotations.images[image_id]
        return semantic_mask(
            self._per_image.get(image_id, []),
            self._label_of,
            int(info["height"]),
            int(info["width"]),
        )

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        path = self.image_dir / info["file_name"]
        image = read_image(path)
        if image.shape[:2] != (int(info["height"]), int(info["width"])):
            raise BadSampleError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but "
                f"{self.annotations.path} says {info['width']}x{info['height']}"
            )
        mask = self.mask(image_id)
        extra = {} if self.eval_masks else {"mask": mask}
        out = self.transform(
            image=image,
            bboxes=self.annotations.boxes[image_id],
            labels=self.annotations.labels[image_id],
            **extra,
        )
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.float64).round()).long(),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "orig_size": torch.tensor(image.shape[:2], dtype=torch.int64),
            "mask": torch.from_numpy(
                np.ascontiguousarray(mask if self.eval_masks else out["mask"])
            ).long(),
        }
        chw = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return chw.float(), target


class COCOJointDataModule(COCODataModule):
    """COCO-layout data with boxes and semantic masks, for ``MultiTaskTask``.

    Same arguments as ``COCODataModule``; batches are ``(images [B, 3, S, S], targets)``
    with ``targets[i]["mask"]`` added (see ``COCOJointDataset``). Exposes
    ``num_seg_classes`` (``num_classes + 1``) and ``seg_class_names`` (``background`` and
    the category names) next to the detection attributes.
    """

    masks = True  # segmentation fields are checked at setup (tasks.data.coco_masks)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        for name, dataset in list(self._datasets.items()):
            if isinstance(dataset, COCOJointDataset):
                continue
            self._datasets[name] = COCOJointDataset(
                dataset.image_dir,
                dataset.annotations,
                dataset.transform,
                include_empty=self.train_include_empty if name == "train" else True,
                eval_masks=name != "train",
            )

    @property
    def num_seg_classes(self) -> int:
        return self.num_classes + 1

    @property
    def seg_class_names(self) -> list[str]:
        return ["background", *self.class_names]
