"""Checks of COCO ``segmentation`` fields, for the data modules that draw masks from them.

Run at setup inside ``validate_coco``'s one pass (``masks=True``), so a hostile value is an
``AnnotationError`` naming the file, the record and the field before anything is drawn,
never a rasterizer that grows without bound (pycocotools sizes its buffers by the polygon's
extent) or a crash inside pycocotools.

What is accepted (either form for either ``iscrowd`` value: pycocotools draws both):

- missing, ``null``, ``[]`` or ``{}``: the object fills its box;
- polygons: a list of lists of finite numbers ``[x1, y1, x2, y2, ...]``, each of even
  length, with every coordinate within one image size of the image
  (``-width <= x <= 2 * width``, the same for y); pycocotools clips to the image;
- RLE: an object with ``size`` equal to the image's ``[height, width]`` and ``counts``
  either a list of integers ``>= 0`` (uncompressed) or a string in COCO's compressed
  format (``mask.encode``), whose runs add up to ``height * width``.

Errors: any other type (a string, a number, a flat list of numbers), a non-numeric, ``NaN``
or infinite coordinate, an odd coordinate count, coordinates far outside the image, an RLE
without ``counts`` or ``size``, another size, counts that are not valid or do not cover the
image.

Repair (counted, logged with the file's other repairs): a polygon of fewer than 3 points
(2 to 4 coordinates, or an empty list) has no area and is left out of the mask. pycocotools
would read a 4-number "polygon" as a *box* and fill it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tasks.data.validate import AnnotationError, Repairs, describe

DEGENERATE = "degenerate polygons (< 3 points) left out of masks"


def check_segmentation(
    seg: Any, width: float, height: float, path: Path, where: str, repairs: Repairs
) -> Any:
    """``seg`` as it may be drawn: degenerate polygons removed (counted in ``repairs``).

    Args:
        seg: the annotation's ``segmentation`` value (already known to be truthy).
        width, height: the image's size.
        path, where: the file and the record, for messages.

    Raises:
        AnnotationError: see the module docstring.
    """
    if type(seg) is list:
        return _polygons(seg, width, height, path, where, repairs)
    if type(seg) is dict:
        _rle(seg, int(width), int(height), path, where)
        return seg
    raise AnnotationError(
        path, where, "segmentation",
        f"must be a list of polygons or an RLE object, got {describe(seg)}",
    )  # fmt: skip


def _polygons(
    seg: list[Any], width: float, height: float, path: Path, where: str, repairs: Repairs
) -> list[Any]:
    kept = seg
    for k, poly in enumerate(seg):
        if type(poly) is not list:
            raise AnnotationError(
                path, where, "segmentation",
                f"must be a list of polygons (lists of numbers [x1, y1, x2, y2, ...]); "
                f"item {k} is {describe(poly)}",
            )  # fmt: skip
        # sum/min/max run in C: the check stays cheap on COCO train's 860k polygons.
        try:
            total = sum(poly)
            xs, ys = poly[0::2], poly[1::2]
            low_x, high_x = min(xs, default=0), max(xs, default=0)
            low_y, high_y = min(ys, default=0), max(ys, default=0)
        except TypeError:
            bad = next(v for v in poly if type(v) not in (int, float))
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} holds {describe(bad)}; coordinates must be numbers",
            ) from None  # fmt: skip
        if not _finite(total):
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} holds a NaN, infinite or huge coordinate: {describe(poly)}",
            )  # fmt: skip
        if len(poly) % 2:
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} has an odd number of coordinates ({len(poly)}); it must be "
                "x, y pairs",
            )  # fmt: skip
        if low_x < -width or high_x > 2 * width or low_y < -height or high_y > 2 * height:
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} reaches ({low_x:.6g}..{high_x:.6g}, {low_y:.6g}..{high_y:.6g}), "
                f"far outside its {width:g}x{height:g} image (at most one image size away)",
            )  # fmt: skip
        if len(poly) < 6:
            if kept is seg:
                kept = seg[:k]
            repairs.add(DEGENERATE)
        elif kept is not seg:
            kept.append(poly)
    return kept


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _rle(seg: dict[str, Any], width: int, height: int, path: Path, where: str) -> None:
    size, counts = seg.get("size"), seg.get("counts")
    if size != [height, width] or any(type(v) is not int for v in size):
        raise AnnotationError(
            path, where, "segmentation",
            f"RLE 'size' must be the image's [height, width] = [{height}, {width}], got "
            f"{describe(size)}",
        )  # fmt: skip
    if type(counts) is list:
        if any(type(c) is not int or c < 0 for c in counts):
            bad = next(c for c in counts if type(c) is not int or c < 0)
            raise AnnotationError(
                path, where, "segmentation",
                f"RLE 'counts' must be integers >= 0, holds {describe(bad)}",
            )  # fmt: skip
        total = sum(counts)
    elif type(counts) is str:
        total = _compressed_total(counts, path, where)
    else:
        raise AnnotationError(
            path, where, "segmentation",
            f"RLE 'counts' must be a list of integers or a compressed string, got "
            f"{describe(counts)}",
        )  # fmt: skip
    if total != height * width:
        raise AnnotationError(
            path, where, "segmentation",
            f"RLE 'counts' cover {total} pixels; the {width}x{height} image has "
            f"{height * width}",
        )  # fmt: skip


def _compressed_total(text: str, path: Path, where: str) -> int:
    """The sum of the runs of a compressed COCO RLE string (pycocotools' ``rleFrString``:
    6-bit groups offset by 48, 5 data bits, a continuation bit, a sign bit in the last
    group; runs after the second are stored as the difference to the run two before)."""
    runs: list[int] = []
    value = shift = 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64 or shift > 60:
            raise AnnotationError(
                path, where, "segmentation",
                f"RLE 'counts' is not a compressed COCO RLE string: {describe(text)}",
            )  # fmt: skip
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise AnnotationError(
                path, where, "segmentation",
                f"RLE 'counts' decodes to a negative run ({value}): {describe(text)}",
            )  # fmt: skip
        runs.append(value)
        value = shift = 0
    if shift:
        raise AnnotationError(
            path, where, "segmentation", f"RLE 'counts' is cut short: {describe(text)}"
        )
    return sum(runs)
