"""Checks of COCO ``segmentation`` fields, for the data modules that draw masks from them.

Run at setup inside ``validate_coco``'s one pass (``masks=True``), so a hostile value is an
``AnnotationError`` naming the file, the record and the field before anything is drawn,
never a rasterizer that grows without bound (pycocotools sizes its buffers by the polygon's
extent) or a crash inside pycocotools.

What is accepted (either form for either ``iscrowd`` value: pycocotools draws both):

- missing, ``null``, ``[]`` or ``{}``: the object fills its box;
- polygons: a list of lists of finite numbers ``[x1, y1, x2, y2, ...]``, each of even
  length, with every coordinate within one image side of the image
  (``-side <= v <= 2 * side``, ``side = max(width, height)``); pycocotools clips to the
  image, but sizes its buffers by the polygon's extent;
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
    side = max(width, height)
    low_limit, high_limit = -side, 2 * side
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
            low, high = min(poly, default=0), max(poly, default=0)
        except TypeError:
            bad = next(v for v in poly if type(v) not in (int, float))
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} holds {describe(bad)}; coordinates must be numbers",
            ) from None  # fmt: skip
        if total - total != 0:  # NaN or infinite (an integer of any size gives 0)
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} holds a NaN or infinite coordinate: {describe(poly)}",
            )  # fmt: skip
        if len(poly) % 2:
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} has an odd number of coordinates ({len(poly)}); it must be "
                "x, y pairs",
            )  # fmt: skip
        if low < low_limit or high > high_limit:
            raise AnnotationError(
                path, where, "segmentation",
                f"polygon {k} reaches {_number(low)}..{_number(high)}, far outside its "
                f"{width:g}x{height:g} image (at most one image side away)",
            )  # fmt: skip
        if len(poly) < 6:
            if kept is seg:
                kept = seg[:k]
            repairs.add(DEGENERATE)
        elif kept is not seg:
            kept.append(poly)
    return kept


def _number(value: float) -> str:
    """A coordinate for a message (an integer of 400 digits does not fit a float)."""
    return f"{value:.6g}" if type(value) is float else describe(value, 20).rpartition(" (")[0]


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
