"""COCO detection data: ``{root}/annotations/instances_{split}.json`` + ``{root}/{split}/``.

The annotation file is checked field by field once when the data set is built (not per
step), see ``tasks.data.coco_schema``: errors name the file, the record and the field;
repairs that leave the metric unchanged (assigned ids, training targets clipped to the
image) are counted and logged in one line.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.data.coco_schema import validate_coco
from tasks.data.detection import DetectionDataModule, Target
from tasks.data.io import BadSampleError, read_image_reduced, scale_boxes
from tasks.data.ssd_transforms import Augmentation, decode_min_side
from tasks.data.validate import AnnotationError, no_gc

log = logging.getLogger(__name__)


class COCOAnnotations:
    """A validated COCO instances file.

    Attributes:
        path: the JSON file.
        images: ``{image_id: image dict}`` (``file_name``, ``width``, ``height``).
        category_ids: sorted COCO category ids; contiguous label ``i`` is ``category_ids[i]``.
        class_names: category names in label order.
        boxes: ``{image_id: [N, 4] float32}`` (x1, y1, x2, y2) training targets: non-crowd
            boxes of positive size, clipped to the image.
        labels: ``{image_id: [N] int64}`` contiguous labels.
        ground_truth: the validated COCO dict (images, annotations incl. crowd, boxes as
            written, categories) that the evaluator scores against.
        num_dropped, num_clipped: training targets left out (zero size, outside the
            image) and clipped.
        repairs: every repair made, by kind (logged in one line).

    Args:
        path: the instances JSON.
        allow_outside_root: accept ``file_name`` values that are absolute or contain
            ``..`` (refused by default: the file must not pick images outside the split's
            folder).
        masks: also check every ``segmentation`` (for data modules that draw masks).

    Raises:
        AnnotationError: a field that would change the results (``coco_schema`` lists them).
    """

    def __init__(
        self, path: str | os.PathLike, allow_outside_root: bool = False, masks: bool = False
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {self.path}")
        with no_gc():
            try:
                data = json.loads(self.path.read_bytes())
            except (ValueError, RecursionError) as err:
                # JSONDecodeError and UnicodeDecodeError are ValueErrors, as is an integer
                # of more than 4300 digits; nesting deeper than the interpreter's stack is
                # a RecursionError.
                problem = "nests too deeply" if isinstance(err, RecursionError) else err
                raise AnnotationError(
                    self.path, "file", "(JSON)", f"is not valid JSON ({problem})"
                ) from None
            content = validate_coco(data, self.path, allow_outside_root, masks)
        del data
        self.images = content.images
        self.categories = content.categories
        self.category_ids = [int(c["id"]) for c in self.categories]
        self.class_names = [str(c["name"]) for c in self.categories]
        self.boxes, self.labels = content.boxes, content.labels
        self.repairs = content.repairs
        self.repairs.report()
        self.ground_truth = {
            "images": list(self.images.values()),
            "annotations": content.annotations,
            "categories": self.categories,
        }

    @property
    def num_dropped(self) -> int:
        """Boxes left out of the training targets: zero size, or outside their image."""
        return (
            self.repairs["zero-size boxes left out of training targets"]
            + self.repairs["boxes outside their image left out of training targets"]
        )

    @property
    def num_clipped(self) -> int:
        """Training targets clipped to their image."""
        return self.repairs["training targets clipped to their image"]


class COCODetectionDataset(Dataset):
    """Images and boxes of one COCO split.

    Args:
        image_dir: folder of the split's images (``file_name`` is relative to it).
        annotations: the validated annotation file.
        transform: albumentations pipeline with ``bboxes`` (pascal_voc) and ``labels``.
        include_empty: keep images without (non-crowd) objects.
        min_side: decode JPEGs at reduced size, no side below ``min_side`` pixels (see
            ``tasks.data.io.read_image_reduced``); ``None`` decodes in full. Boxes are
            scaled to the decoded size, ``orig_size`` stays the size on disk.

    Returns ``(image [3, H, W] float32, target)`` with ``target``: ``boxes`` ``[N, 4]``
    float32 (x1, y1, x2, y2, pixels of the transformed image), ``labels`` ``[N]`` int64,
    ``image_id`` int64 scalar, ``orig_size`` ``[2]`` int64 (height, width on disk).
    """

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotations: COCOAnnotations,
        transform: A.Compose,
        include_empty: bool = True,
        min_side: int | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.min_side = min_side
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {self.image_dir}")
        self.annotations = annotations
        self.transform = transform
        self.image_ids = [
            i for i in sorted(annotations.images) if include_empty or len(annotations.boxes[i])
        ]
        if not self.image_ids:
            raise AnnotationError(
                annotations.path, "top level", "images",
                f"holds no image to use (include_empty={include_empty})",
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        path = self.image_dir / info["file_name"]
        image, full = read_image_reduced(path, self.min_side)
        if full != (int(info["height"]), int(info["width"])):
            raise BadSampleError(
                f"{path}: image is {full[1]}x{full[0]} but "
                f"{self.annotations.path} says {info['width']}x{info['height']}"
            )
        out = self.transform(
            image=image,
            bboxes=scale_boxes(self.annotations.boxes[image_id], image.shape[:2], full),
            labels=self.annotations.labels[image_id],
        )
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            # albumentations hands label fields back as floats
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.float64).round()).long(),
            "image_id": torch.tensor(image_id, dtype=torch.int64),
            "orig_size": torch.tensor(full, dtype=torch.int64),
        }
        chw = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return chw.float(), target


def check_split_patterns(annotation_pattern: str, image_dir_pattern: str) -> None:
    """Raise a ``ValueError`` naming the pattern that lacks ``{split}``."""
    for name, pattern in (
        ("annotation_pattern", annotation_pattern),
        ("image_dir_pattern", image_dir_pattern),
    ):
        if "{split}" not in pattern:
            raise ValueError(f"{name} must contain '{{split}}', got {pattern!r}")


class COCODataModule(DetectionDataModule):
    """COCO-layout detection data for SSDLite.

    Args:
        root: data set folder holding ``annotations/`` and one image folder per split.
        train_split: training split name (``train2017``).
        val_split: validation split name (``val2017``).
        test_split: split for ``test`` (default: ``val_split``).
        annotation_pattern: annotation file of a split, relative to ``root``;
            ``{split}`` is replaced by the split name.
        image_dir_pattern: image folder of a split, relative to ``root``.
        train_include_empty: also train on images without objects (evaluation always
            keeps them).
        allow_outside_root: accept image ``file_name`` values that are absolute or leave
            the image folder through ``..`` (refused by default).
        reduced_decoding: decode large JPEGs at 1/2, 1/4 or 1/8 size where the
            augmentation loses nothing by it (``ssd_transforms.decode_min_side``; boxes are
            scaled exactly); ``False`` decodes every image in full.
        **kwargs: ``image_size``, ``augmentation``, ``zoom_out_ratio``, ``mean``, ``std``,
            ``predict_dir``, ``loader`` of ``DetectionDataModule``, whose defaults are
            SSDLite's for COCO (320, ``"ssd"``, zoom-out up to 4).

    Exposed to the task (duck-typed, no import): ``num_classes``, ``category_ids``,
    ``class_names`` and ``ground_truth(stage)`` (the cleaned COCO dict of the split that
    ``validate`` / ``test`` score against).
    """

    def __init__(
        self,
        root: str,
        train_split: str = "train2017",
        val_split: str = "val2017",
        test_split: str | None = None,
        annotation_pattern: str = "annotations/instances_{split}.json",
        image_dir_pattern: str = "{split}",
        train_include_empty: bool = False,
        allow_outside_root: bool = False,
        reduced_decoding: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_split_patterns(annotation_pattern, image_dir_pattern)
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self.test_split = test_split or val_split
        self.annotation_pattern, self.image_dir_pattern = annotation_pattern, image_dir_pattern
        self.train_include_empty = train_include_empty
        self.allow_outside_root = allow_outside_root
        self.reduced_decoding = reduced_decoding
        self._annotations: dict[str, COCOAnnotations] = {}

    #: check the ``segmentation`` fields at setup (the data modules that draw masks)
    masks: bool = False

    def annotation_file(self, split: str) -> Path:
        return self.root / self.annotation_pattern.format(split=split)

    def image_dir(self, split: str) -> Path:
        return self.root / self.image_dir_pattern.format(split=split)

    def _load(self, split: str) -> COCOAnnotations:
        if split not in self._annotations:
            self._annotations[split] = COCOAnnotations(
                self.annotation_file(split), self.allow_outside_root, self.masks
            )
        return self._annotations[split]

    def _split_of(self, stage: str) -> str:
        return self.test_split if stage == "test" else self.val_split

    def setup(self, stage: str) -> None:
        splits = {"fit": [self.train_split, self.val_split], "validate": [self.val_split]}
        splits["test"] = [self.test_split]
        for split in splits.get(stage, []):
            self._load(split)
        loaded = list(self._annotations.values())
        for ann in loaded[1:]:
            if ann.category_ids != loaded[0].category_ids:
                raise ValueError(
                    f"categories differ between {loaded[0].path} ({loaded[0].category_ids}) and "
                    f"{ann.path} ({ann.category_ids})"
                )
        if stage == "fit":
            self._datasets["train"] = COCODetectionDataset(
                self.image_dir(self.train_split),
                self._annotations[self.train_split],
                self.train_transform(),
                include_empty=self.train_include_empty,
                min_side=self._min_side(self.augmentation),
            )
        for name in ("validate", "test"):
            if stage == name or (stage == "fit" and name == "validate"):
                split = self._split_of(name)
                self._datasets[name] = COCODetectionDataset(
                    self.image_dir(split),
                    self._annotations[split],
                    self.eval_transform(),
                    include_empty=True,
                    min_side=self._min_side(None),
                )

    def _min_side(self, augmentation: Augmentation | None) -> int | None:
        if not self.reduced_decoding:
            return None
        return decode_min_side(self.image_size, augmentation)

    # -- what the task reads ---------------------------------------------------------------
    def _any_annotations(self) -> COCOAnnotations:
        if not self._annotations:
            self._load(self.val_split)
        return next(iter(self._annotations.values()))

    @property
    def num_classes(self) -> int:
        return len(self._any_annotations().category_ids)

    @property
    def category_ids(self) -> list[int]:
        return list(self._any_annotations().category_ids)

    @property
    def class_names(self) -> list[str]:
        return list(self._any_annotations().class_names)

    def input_boxes(self, split: str) -> Tensor:
        """``[N, 4]`` the training targets of ``split`` (x1, y1, x2, y2) in the pixels of the
        ``image_size`` x ``image_size`` network input, as the evaluation resize maps them."""
        annotations = self._load(split)
        input_size = (self.image_size, self.image_size)
        scaled = []
        for image_id, boxes in annotations.boxes.items():
            image = annotations.images[image_id]
            scaled.append(scale_boxes(boxes, input_size, (image["height"], image["width"])))
        return torch.from_numpy(np.concatenate(scaled)) if scaled else torch.zeros(0, 4)

    def ground_truth(self, stage: str) -> dict[str, Any]:
        """The cleaned COCO dict that ``stage`` (``"validate"`` or ``"test"``) is scored on."""
        return self._load(self._split_of(stage)).ground_truth
