"""Reading images and masks from disk, with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class BadSampleError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as ``uint8`` RGB ``[H, W, 3]``, upright per its EXIF orientation.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB (16-bit
    values are scaled down, alpha is dropped).

    Raises:
        BadSampleError: the file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise BadSampleError(f"{path}: image file is empty")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadSampleError(f"{path}: not a readable image ({err})") from err


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label mask (palette or grayscale PNG) as ``uint8`` ``[H, W]`` of raw values.

    For a palette PNG the pixel values are the palette indices (the VOC convention: index
    = class, 255 = void), not the colours.

    Raises:
        BadSampleError: the file is missing, unreadable, or has more than one channel.
    """
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(f"{path}: mask file not found")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L", "I", "I;16"):
                raise BadSampleError(
                    f"{path}: mask must be a palette or single-channel PNG, got mode {img.mode}"
                )
            mask = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise BadSampleError(f"{path}: not a readable mask ({err})") from err
    if mask.max(initial=0) > 255:
        raise BadSampleError(f"{path}: mask values above 255 (max {int(mask.max())})")
    return mask.astype(np.uint8)
