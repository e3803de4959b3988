"""Semantic segmentation from a COCO instances file: polygons (or RLE) become a mask.

For a user's own photos labelled with outlines in a tool that exports COCO (CVAT, VIA,
Label Studio, makesense): ``{root}/annotations/instances_{split}.json`` + ``{root}/{split}/``,
the same layout and the same validated reader as ``COCODataModule``. The mask is
``tasks.data.coco_joint.semantic_mask``: 0 = background, ``1 + label`` for the contiguous
label of the category, 255 (void) for crowd regions; so ``num_classes`` is the number of
categories + 1. Training uses DeepLab's augmentation and evaluation the full image at its
size on disk, as ``SegmentationDataModule`` does for VOC.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from tasks.data.base import LoaderOptions
from tasks.data.coco import COCOAnnotations, check_split_patterns
from tasks.data.coco_joint import semantic_mask
from tasks.data.io import BadSampleError, read_image
from tasks.data.segmentation import SegmentationDataModule, SegmentationDataset


class COCOSegmentationDataset(SegmentationDataset):
    """Images of one COCO split with masks rendered from their annotations.

    Args:
        image_dir: folder of the split's images (``file_name`` is relative to it).
        annotations: the validated annotation file.
        transform: albumentations pipeline applied to ``image`` and ``mask`` together.

    Items are those of ``SegmentationDataset``: ``image`` ``[3, H, W]`` float32, ``mask``
    ``[H, W]`` int64 (values ``0..len(categories)`` and 255), ``path``.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotations: COCOAnnotations,
        transform: A.BasicTransform | None,
    ) -> None:
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir}")
        self.annotations = annotations
        self.image_ids = sorted(annotations.images)
        samples = [
            (self.image_dir / annotations.images[i]["file_name"], annotations.path)
            for i in self.image_ids
        ]
        super().__init__(samples, transform, len(annotations.category_ids) + 1)
        self._per_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for ann in annotations.ground_truth["annotations"]:
            self._per_image[int(ann["image_id"])].append(ann)
        self._label_of = {c: i for i, c in enumerate(annotations.category_ids)}

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``uint8 [H, W, 3]`` and its rendered mask ``uint8 [H, W]``."""
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        path = self.samples[index][0]
        image = read_image(path)
        height, width = int(info["height"]), int(info["width"])
        if image.shape[:2] != (height, width):
            raise BadSampleError(
                f"{path}: image is {image.shape[1]}x{image.shape[0]} but "
                f"{self.annotations.path} says {width}x{height}"
            )
        mask = semantic_mask(self._per_image.get(image_id, []), self._label_of, height, width)
        return image, mask


class COCOSegmentationDataModule(SegmentationDataModule):
    """COCO-layout data as semantic masks, for ``SegmentationTask``.

    Args:
        root: data set folder holding ``annotations/`` and one image folder per split.
        train_split, val_split: split names (``train``, ``val``).
        annotation_pattern, image_dir_pattern: see ``COCODataModule``.
        allow_outside_root: see ``COCODataModule``.
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
        **kwargs: ``crop_size``, ``min_scale``, ``max_scale``, ``flip``, ``mean``, ``std``,
            ``predict_dir`` of ``SegmentationDataModule``.

    ``class_names`` is ``background`` followed by the category names (label order).
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        annotation_pattern: str = "annotations/instances_{split}.json",
        image_dir_pattern: str = "{split}",
        allow_outside_root: bool = False,
        loader: LoaderOptions = LoaderOptions(batch_size=16, num_workers=4),
        **kwargs: Any,
    ) -> None:
        super().__init__(loader=loader, **kwargs)
        check_split_patterns(annotation_pattern, image_dir_pattern)
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self.annotation_pattern, self.image_dir_pattern = annotation_pattern, image_dir_pattern
        self.allow_outside_root = allow_outside_root
        self._annotations: dict[str, COCOAnnotations] = {}

    def _load(self, split: str) -> COCOAnnotations:
        if split not in self._annotations:
            path = self.root / self.annotation_pattern.format(split=split)
            self._annotations[split] = COCOAnnotations(path, self.allow_outside_root)
        return self._annotations[split]

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("background", *self._load(self.val_split).class_names)

    def _dataset(self, split: str, train: bool) -> COCOSegmentationDataset:  # type: ignore[override]
        annotations = self._load(split)
        if annotations.category_ids != self._load(self.val_split).category_ids:
            raise ValueError(
                f"categories differ between {annotations.path} ({annotations.category_ids}) "
                f"and the {self.val_split} split ({self._load(self.val_split).category_ids})"
            )
        return COCOSegmentationDataset(
            self.root / self.image_dir_pattern.format(split=split),
            annotations,
            self.train_transform if train else self.eval_transform,
        )
