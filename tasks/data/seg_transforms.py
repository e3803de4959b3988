"""DeepLab's segmentation augmentation and the PASCAL VOC colour map.

- ``segmentation_transforms``: random scale, crop padded with the ignore label, horizontal
  flip, with albumentations; masks are only ever resized with nearest neighbour, so no new
  label values appear. With ``base_size``, photos of any size are first brought to one scale.
- ``voc_palette``: the PASCAL VOC colour map used to write palette PNGs.

The segmentation data set and data-module base are in ``tasks.data.segmentation``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from tasks.data.transforms import normalize

import albumentations as A  # isort: skip  (after tasks.data.transforms: no update check)

IGNORE_INDEX = 255


class LongestSideImageOnly(A.ImageOnlyTransform):
    """Resize the image (bilinear) so that its longer side is ``size``; a mask passes
    through at its own full resolution (evaluation scores there)."""

    def __init__(self, size: int, p: float = 1.0) -> None:
        super().__init__(p=p)
        self.size = size

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        height, width = img.shape[:2]
        scale = self.size / max(height, width)
        if scale == 1.0:
            return img
        out_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(img, out_size, interpolation=cv2.INTER_LINEAR)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size",)


def segmentation_transforms(
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_size: int | Sequence[int] = 513,
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    flip: bool = True,
    ignore_index: int = IGNORE_INDEX,
    base_size: int | None = None,
) -> A.Compose:
    """The DeepLab training augmentation, or plain normalization for evaluation.

    Train: (with ``base_size``: resize so the longer side is ``base_size``) -> random scale
    in ``[min_scale, max_scale]`` (bilinear for the image, nearest for the mask) ->
    normalize -> pad to at least ``crop_size`` (image with 0, i.e. the mean colour after
    normalization, as TF DeepLab pads with the mean pixel; mask with ``ignore_index``) ->
    random crop ``crop_size`` -> random horizontal flip.
    Eval: normalize only (full images, never centre crops); with ``base_size`` the image
    (not the mask) is resized so its longer side is ``base_size``, and the task scores the
    prediction upsampled to the mask's full resolution.

    Args:
        train: training or evaluation pipeline.
        mean, std: per-channel normalization (``SYMMETRIC_MEAN/STD`` map to [-1, 1]).
        crop_size: square side, or ``(height, width)``, of training crops.
        min_scale, max_scale: range of the random scale factor.
        flip: random left-right flip in training.
        ignore_index: mask value of padded pixels.
        base_size: longer image side the photos are brought to before anything else
            (``None``: photos keep their size, as the VOC and Cityscapes protocols want).
            Makes ``min_scale``/``max_scale`` and evaluation independent of photo size.
    """
    if base_size is not None and base_size < 1:
        raise ValueError(f"base_size must be a positive number of pixels, got {base_size}")
    if not train:
        resize = [] if base_size is None else [LongestSideImageOnly(base_size)]
        return A.Compose([*resize, normalize(tuple(mean), tuple(std))])
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}")
    height, width = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if height < 1 or width < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    ops: list[A.BasicTransform] = []
    if base_size is not None:
        ops.append(
            A.LongestMaxSize(
                max_size=base_size,
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
            )
        )
    ops += [
        # RandomScale draws the factor from 1 + U(scale_limit).
        A.RandomScale(
            scale_limit=(min_scale - 1.0, max_scale - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        normalize(tuple(mean), tuple(std)),
        A.PadIfNeeded(
            min_height=height,
            min_width=width,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0.0,
            fill_mask=ignore_index,
        ),
        A.RandomCrop(height, width),
    ]
    if flip:
        ops.append(A.HorizontalFlip(p=0.5))
    return A.Compose(ops)


def voc_palette(num_colors: int = 256) -> list[int]:
    """The PASCAL VOC colour map as a flat ``[r, g, b, ...]`` list for ``Image.putpalette``.

    Colour ``i`` spreads the bits of ``i`` over the three channels, high bits first
    (class 1 = (128, 0, 0), class 15 = (192, 128, 128)); 255 (void) is (224, 224, 192).
    """
    palette = []
    for index in range(num_colors):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette
