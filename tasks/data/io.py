"""Reading images and masks from disk, with errors that name the file.

Size limit: an image or mask of more than ``max_image_pixels()`` pixels (width x height,
read from the file header before anything is decoded) is a ``BadSampleError`` naming the
file, so a decompression bomb (a small file that decodes to gigabytes) or an absurd size
fails like any other bad sample (and is skipped in training with ``on_bad_sample: skip``).
The limit is Pillow's own warning threshold, 89,478,485 pixels (about 9459 x 9459), unless
the environment variable ``MOBILEZOO_MAX_IMAGE_PIXELS`` sets another (loader workers inherit
it). Above twice Pillow's ``PIL.Image.MAX_IMAGE_PIXELS`` Pillow itself refuses to open the
file; raise that too for larger images.

Reduced decoding: ``read_image_reduced`` decodes a JPEG at 1/2, 1/4 or 1/8 of its size
(libjpeg's DCT scaling, Pillow's ``Image.draft``) when every side stays at least
``min_side`` pixels: a 2,000-pixel photo trained at 300 px need not be decoded in full. It
returns the full size too, so that boxes can be scaled by the decoded / full ratio of each
side (the same fractions of the image as a full decode; see ``scale_boxes``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class BadSampleError(ValueError):
    """A data file is missing, unreadable or inconsistent; the message names the file."""


#: the default pixel limit: Pillow's decompression-bomb warning threshold
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_PIXELS_ENV = "MOBILEZOO_MAX_IMAGE_PIXELS"


def max_image_pixels() -> int:
    """The pixel limit of images and masks: ``$MOBILEZOO_MAX_IMAGE_PIXELS`` or 89,478,485."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive integer, got {text!r}")
    return value


@contextmanager
def open_checked(path: Path, what: str, max_pixels: int | None = None) -> Iterator[Image.Image]:
    """``Image.open`` whose header size is checked against the pixel limit before any
    pixel is decoded.

    Raises:
        BadSampleError: the image is larger than ``max_pixels`` (default
            ``max_image_pixels()``), or Pillow refuses it as a decompression bomb.
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            # the limit below replaces Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise BadSampleError(
            f"{path}: {what} refused as a possible decompression bomb ({err}); the pixel "
            f"limit is {limit} (${MAX_PIXELS_ENV}, and PIL.Image.MAX_IMAGE_PIXELS for Pillow)"
        ) from err
    with img:
        width, height = img.size
        if width * height > limit:
            raise BadSampleError(
                f"{path}: {what} is {width}x{height} = {width * height} pixels, above the "
                f"limit of {limit} (a decompression bomb or an absurd size; set "
                f"${MAX_PIXELS_ENV} to allow larger files)"
            )
        if width < 1 or height < 1:
            raise BadSampleError(f"{path}: {what} has no pixels ({width}x{height})")
        yield img


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image as ``uint8`` RGB ``[H, W, 3]``, upright per its EXIF orientation.

    Grayscale, palette, RGBA, CMYK and 16-bit images are converted to 8-bit RGB (16-bit
    values are scaled down, alpha is dropped).

    Args:
        path: the image file.
        max_pixels: pixel limit (default ``max_image_pixels()``, see the module docstring).

    Raises:
        BadSampleError: the file is missing, empty, truncated, not an image, or larger than
            the pixel limit (decompression bombs).
    """
    return read_image_reduced(path, None, max_pixels)[0]


def read_image_reduced(
    path: str | os.PathLike, min_side: int | None, max_pixels: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image like ``read_image``, a JPEG decoded at reduced size where allowed.

    A JPEG is decoded at the smallest of 1/1, 1/2, 1/4, 1/8 of its size whose sides are
    both at least ``min(min_side, full side)``; other formats (and ``min_side=None``) are
    decoded in full.

    Args:
        path: the image file.
        min_side: the smallest side, in pixels, the decoded image may have (``None``: full
            size). Decoding never goes below the full size's own side.
        max_pixels: pixel limit (see ``read_image``).

    Returns:
        ``(image, (height, width))``: ``uint8`` RGB ``[h, w, 3]``, upright, and the full
        upright size, which annotations refer to.

    Raises:
        BadSampleError: as ``read_image``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise BadSampleError(f"{path}: image file is empty")
    try:
        with open_checked(path, "image", max_pixels) as img:
            width, height = img.size
            if min_side is not None and min_side > 0:
                # draft keeps both sides >= the request: a square request suits every
                # EXIF orientation. Only JPEG (DCT scaling) reacts; others ignore it.
                side = min(min_side, width, height)
                img.draft(img.mode, (side, side))
            img.load()
            if _orientation(img) in _SWAPS_AXES:
                width, height = height, width
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img), (height, width)
    except BadSampleError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadSampleError(f"{path}: not a readable image ({err})") from err


#: EXIF orientations that rotate by 90 degrees (width and height swap)
_SWAPS_AXES = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except (TypeError, ValueError):
        return 1


def scale_boxes(boxes: np.ndarray, decoded: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
    """Boxes ``[N, 4]`` (x1, y1, x2, y2) in pixels of the ``full`` ``(height, width)``
    image, in pixels of the ``decoded`` ``(height, width)`` one (float32)."""
    if decoded == full:
        return boxes
    sy, sx = decoded[0] / full[0], decoded[1] / full[1]
    return (np.asarray(boxes, dtype=np.float32) * np.float32([sx, sy, sx, sy])).astype(np.float32)


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


#: PIL modes a label mask may have: palette, 8-bit, 32-bit and 16-bit single channel
MASK_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L")


def read_label_png(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read a label mask (palette or grayscale PNG) as ``uint8`` ``[H, W]`` of raw values.

    For a palette PNG the pixel values are the palette indices (the VOC convention: index
    = class, 255 = void), not the colours. 16- and 32-bit masks are accepted when every
    value fits 0..255; a negative or larger value is an error, never wrapped around.

    Raises:
        BadSampleError: the file is missing, unreadable, larger than the pixel limit, of a
            mode other than ``MASK_MODES`` (RGB, RGBA, 1-bit, float...), or holds values
            outside 0..255.
    """
    mask, mode = read_single_channel(path, "mask", max_pixels)
    if mask.dtype != np.uint8 and mask.size:
        low, high = int(mask.min()), int(mask.max())
        if low < 0 or high > 255:
            raise BadSampleError(
                f"{path}: mask values must be 0..255 (a class or 255 = void), found "
                f"{low}..{high} in mode {mode}"
            )
    return mask.astype(np.uint8)


def read_single_channel(
    path: str | os.PathLike, what: str = "mask", max_pixels: int | None = None
) -> tuple[np.ndarray, str]:
    """The raw values ``[H, W]`` (8, 16 or 32 bits, as stored) and the PIL mode of a
    single-channel or palette PNG (``MASK_MODES``): label masks, Cityscapes instance ids.

    Raises:
        BadSampleError: the file is missing, unreadable, larger than the pixel limit, or of
            another mode.
    """
    path = Path(path)
    if not path.is_file():
        raise BadSampleError(f"{path}: {what} file not found")
    try:
        with open_checked(path, what, max_pixels) as img:
            if img.mode not in MASK_MODES:
                raise BadSampleError(
                    f"{path}: {what} must be a palette or single-channel PNG (modes "
                    f"{', '.join(MASK_MODES)}), got mode {img.mode}"
                )
            img.load()
            return np.asarray(img), img.mode
    except BadSampleError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadSampleError(f"{path}: not a readable {what} ({err})") from err
