"""SSD data augmentation as albumentations transforms (boxes travel with the image).

albumentations has no SSD min-IoU crop and no "zoom out" onto a larger canvas, so both are
written here as albumentations transforms; the rest (photometric distortion, flip,
resize, normalization) are stock albumentations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

# The ``tasks`` package sets NO_ALBUMENTATIONS_UPDATE before this import runs.
import albumentations as A
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.core.type_definitions import Targets

from tasks.data.transforms import normalize

Augmentation = Literal["ssd", "flip", "none"]
AUGMENTATIONS: tuple[str, ...] = ("ssd", "flip", "none")
#: SSD's pixel mean, the fill of the zoom-out canvas (Liu et al. / torchvision)
SSD_FILL = (123, 117, 104)


def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[4]`` box with ``[N, 4]`` boxes, all (x1, y1, x2, y2)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:4])
    inter = np.clip(rb - lt, 0, None).prod(axis=1)
    area = (box[2:] - box[:2]).prod()
    areas = (boxes[:, 2:4] - boxes[:, :2]).prod(axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


class RandomIoUCrop(BaseCrop):
    """SSD's random crop: a patch whose IoU with some object reaches a sampled minimum.

    For each call one option is drawn from ``min_ious`` plus "no crop" (``None``) and
    "any patch" (``0.0``). A patch of ``min_scale..max_scale`` of each side with aspect
    ratio in ``aspect_range`` is accepted when at least one box has its centre inside and
    the best IoU of those boxes with the patch is ``>= min_iou``. Boxes whose centre is
    outside the patch are dropped; the others are clipped to it. After ``max_trials``
    failures the image is left as is. Images without boxes get an unconstrained patch.

    Args:
        min_ious: IoU thresholds to draw from (SSD: 0.1, 0.3, 0.5, 0.7, 0.9).
        min_scale: smallest patch side as a fraction of the image side (0.3).
        max_scale: largest patch side fraction (1.0).
        aspect_range: allowed patch width / height (0.5, 2).
        max_trials: patches tried per call (50).
        p: probability of applying the transform.
    """

    _targets = (Targets.IMAGE, Targets.MASK, Targets.BBOXES)

    def __init__(
        self,
        min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
        min_scale: float = 0.3,
        max_scale: float = 1.0,
        aspect_range: tuple[float, float] = (0.5, 2.0),
        max_trials: int = 50,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if not 0 < min_scale <= max_scale <= 1:
            raise ValueError(f"need 0 < min_scale <= max_scale <= 1, got {min_scale}, {max_scale}")
        self.min_ious = tuple(min_ious)
        self.min_scale, self.max_scale = min_scale, max_scale
        self.aspect_range = aspect_range
        self.max_trials = max_trials

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        full = {"crop_coords": (0, 0, width, height)}
        options: list[float | None] = [None, 0.0, *self.min_ious]
        min_iou = options[self.py_random.randrange(len(options))]
        if min_iou is None:
            return full
        bboxes = np.asarray(data.get("bboxes", np.zeros((0, 4))), dtype=np.float64)
        boxes = bboxes[:, :4] * np.array([width, height, width, height])
        centres = (boxes[:, :2] + boxes[:, 2:4]) / 2
        for _ in range(self.max_trials):
            w = self.py_random.uniform(self.min_scale, self.max_scale) * width
            h = self.py_random.uniform(self.min_scale, self.max_scale) * height
            if not self.aspect_range[0] <= w / h <= self.aspect_range[1]:
                continue
            x1 = self.py_random.uniform(0, width - w)
            y1 = self.py_random.uniform(0, height - h)
            patch = np.array([x1, y1, x1 + w, y1 + h])
            coords = tuple(round(float(v)) for v in patch)
            if coords[2] - coords[0] < 1 or coords[3] - coords[1] < 1:
                continue
            if len(boxes) == 0:
                return {"crop_coords": coords}
            inside = _centres_inside(centres, np.asarray(coords, dtype=np.float64))
            if not inside.any():
                continue
            if _iou_one_to_many(patch, boxes[inside]).max() >= min_iou:
                return {"crop_coords": coords}
        return full

    def apply_to_bboxes(
        self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any
    ) -> np.ndarray:
        if len(bboxes) == 0:
            return bboxes
        height, width = params["shape"][:2]
        scale = np.array([width, height])
        centres = (bboxes[:, :2] + bboxes[:, 2:4]) / 2 * scale
        inside = _centres_inside(centres, np.asarray(crop_coords, dtype=np.float64))
        out = super().apply_to_bboxes(bboxes, crop_coords=crop_coords, **params).copy()
        # A zero-area box is removed by albumentations' final box filtering.
        out[~inside, :4] = 0.0
        return out


def _centres_inside(centres: np.ndarray, rect: np.ndarray) -> np.ndarray:
    return (
        (centres[:, 0] > rect[0])
        & (centres[:, 1] > rect[1])
        & (centres[:, 0] < rect[2])
        & (centres[:, 1] < rect[3])
    )


class RandomZoomOut(A.DualTransform):
    """SSD's "expand": place the image on a canvas ``1..max_ratio`` times larger per side,
    filled with ``fill``, so objects become smaller.

    Args:
        max_ratio: largest canvas side / image side (SSD: 4).
        fill: RGB fill of the canvas (SSD: the dataset mean pixel).
        p: probability of applying the transform (SSD: 0.5).
    """

    _targets = (Targets.IMAGE, Targets.MASK, Targets.BBOXES)

    def __init__(
        self, max_ratio: float = 4.0, fill: Sequence[int] = SSD_FILL, p: float = 0.5
    ) -> None:
        super().__init__(p=p)
        if max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
        self.max_ratio = max_ratio
        self.fill = tuple(fill)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        new_h, new_w = math.ceil(height * ratio), math.ceil(width * ratio)
        top = self.py_random.randint(0, new_h - height)
        left = self.py_random.randint(0, new_w - width)
        return {"canvas": (new_h, new_w), "offset": (top, left)}

    def apply(
        self, img: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        out = np.empty((*canvas, *img.shape[2:]), dtype=img.dtype)
        out[...] = np.asarray(self.fill[: img.shape[2]] if img.ndim == 3 else self.fill[0])
        top, left = offset
        out[top : top + img.shape[0], left : left + img.shape[1]] = img
        return out

    def apply_to_mask(
        self, mask: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        out = np.zeros((*canvas, *mask.shape[2:]), dtype=mask.dtype)
        top, left = offset
        out[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
        return out

    def apply_to_bboxes(
        self,
        bboxes: np.ndarray,
        canvas: tuple[int, int],
        offset: tuple[int, int],
        **params: Any,
    ) -> np.ndarray:
        # Boxes are normalized to the image; renormalize them to the canvas.
        height, width = params["shape"][:2]
        (new_h, new_w), (top, left) = canvas, offset
        out = bboxes.copy()
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * width + left) / new_w
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * height + top) / new_h
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_ratio", "fill")


def photometric_distortion(p: float = 0.5) -> A.ColorJitter:
    """SSD's photometric distortion: brightness +-32/255, contrast and saturation 0.5-1.5,
    hue +-18 degrees, in random order (albumentations' ColorJitter)."""
    return A.ColorJitter(
        brightness=32 / 255, contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=18 / 360, p=p
    )


def bbox_params(min_size: float = 1.0) -> A.BboxParams:
    """Pixel (x1, y1, x2, y2) boxes with a ``labels`` field; boxes are clipped to the image
    and boxes smaller than ``min_size`` pixels (after all transforms) are dropped."""
    return A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,
        filter_invalid_bboxes=True,
        min_width=min_size,
        min_height=min_size,
    )


def ssd_train_transforms(
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    augmentation: Augmentation = "ssd",
    zoom_out_ratio: float = 4.0,
) -> A.Compose:
    """Training pipeline: ``"ssd"`` = photometric distortion, zoom-out (p 0.5), min-IoU
    crop, horizontal flip; ``"flip"`` = flip only; ``"none"``. Then resize to
    ``image_size`` x ``image_size`` and normalize."""
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    ops: list[A.BasicTransform] = []
    if augmentation == "ssd":
        ops += [photometric_distortion(), RandomZoomOut(zoom_out_ratio), RandomIoUCrop()]
    if augmentation in ("ssd", "flip"):
        ops.append(A.HorizontalFlip(p=0.5))
    ops += [A.Resize(image_size, image_size), normalize(tuple(mean), tuple(std))]
    return A.Compose(ops, bbox_params=bbox_params())


def decode_min_side(image_size: int, augmentation: Augmentation | None) -> int:
    """The smallest image side (pixels) that loses nothing at ``image_size`` after the
    training ``augmentation`` (``None``: evaluation): the resize alone needs
    ``image_size``; the min-IoU crop keeps as little as ``RandomIoUCrop``'s ``min_scale``
    of a side before resizing, so ``"ssd"`` needs ``image_size / min_scale``. Zoom-out only
    shrinks the image further."""
    if augmentation == "ssd":
        return math.ceil(image_size / RandomIoUCrop().min_scale)
    return image_size


def ssd_eval_transforms(image_size: int, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Evaluation pipeline: resize to ``image_size`` x ``image_size`` and normalize."""
    return A.Compose(
        [A.Resize(image_size, image_size), normalize(tuple(mean), tuple(std))],
        bbox_params=bbox_params(min_size=0.0),
    )
