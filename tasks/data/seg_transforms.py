"""DeepLab's segmentation augmentation and the PASCAL VOC colour map.

- ``segmentation_transforms``: random scale, crop padded with the ignore label, horizontal
  flip, with albumentations; masks are only ever resized with nearest neighbour, so no new
  label values appear.
- ``voc_palette``: the PASCAL VOC colour map used to write palette PNGs.

The segmentation data set and data-module base are in ``tasks.data.segmentation``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2

from tasks.data.transforms import normalize

import albumentations as A  # isort: skip  (after tasks.data.transforms: no update check)

IGNORE_INDEX = 255


def segmentation_transforms(
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_size: int | Sequence[int] = 513,
    min_scale: float = 0.5,
    max_scale: float = 2.0,
    flip: bool = True,
    ignore_index: int = IGNORE_INDEX,
) -> A.Compose:
    """The DeepLab training augmentation, or plain normalization for evaluation.

    Train: random scale in ``[min_scale, max_scale]`` (bilinear for the image, nearest for
    the mask) -> normalize -> pad to at least ``crop_size`` (image with 0, i.e. the mean
    colour after normalization, as TF DeepLab pads with the mean pixel; mask with
    ``ignore_index``) -> random crop ``crop_size`` -> random horizontal flip.
    Eval: normalize only (full images, never centre crops).

    Args:
        train: training or evaluation pipeline.
        mean, std: per-channel normalization (``SYMMETRIC_MEAN/STD`` map to [-1, 1]).
        crop_size: square side, or ``(height, width)``, of training crops.
        min_scale, max_scale: range of the random scale factor.
        flip: random left-right flip in training.
        ignore_index: mask value of padded pixels.
    """
    if not train:
        return A.Compose([normalize(tuple(mean), tuple(std))])
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale} and {max_scale}")
    height, width = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
    if height < 1 or width < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    ops: list[A.BasicTransform] = [
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
