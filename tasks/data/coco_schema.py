"""Field-by-field validation of a COCO instances file, in one pass over its records.

Errors (``AnnotationError``: file, record, field), because they would change a metric or
pair an image with another's objects:

- the file is not an object, or ``images`` / ``annotations`` / ``categories`` is not a list;
- a record that is not an object; a required field missing;
- ids that are not integers (strings, floats, ``true``), duplicate image, category or
  annotation ids, annotation ids ``<= 0`` (pycocotools uses 0 for "unmatched");
- ``width`` / ``height`` not positive integers; ``file_name`` not a string, used twice,
  absolute or leaving the image folder through ``..`` (unless ``allow_outside_root``);
- ``image_id`` / ``category_id`` of an annotation naming no image / category;
- ``bbox`` not a list of 4 numbers (strings, ``null``); ``area`` not a finite number
  ``>= 0``; ``iscrowd`` not 0 or 1.

Repairs (counted, logged in one line), because they leave the metric as it is:

- missing annotation ids get fresh ids above the largest one;
- missing ``area`` is the (clipped) box area;
- integral float ``width`` / ``height`` (``640.0``) become integers;
- boxes without positive finite size are dropped, boxes reaching outside their image are
  clipped (dropped when nothing is left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.validate import (
    AnnotationError,
    Repairs,
    check_int,
    check_relative_path,
    describe,
    first_duplicate,
)

_MISSING = object()


@dataclass
class COCOContent:
    """What ``validate_coco`` returns.

    Attributes:
        images: ``{image_id: image dict}``.
        categories: category dicts sorted by id.
        boxes: ``{image_id: [N, 4] float32}`` (x1, y1, x2, y2) of non-crowd objects.
        labels: ``{image_id: [N] int64}`` contiguous labels (index into ``categories``).
        annotations: the cleaned annotations (crowd ones included) for the evaluator.
        repairs: what was repaired, by kind.
    """

    images: dict[int, dict[str, Any]]
    categories: list[dict[str, Any]]
    boxes: dict[int, np.ndarray]
    labels: dict[int, np.ndarray]
    annotations: list[dict[str, Any]]
    repairs: Repairs = field(repr=False, default=None)  # type: ignore[assignment]


def _list(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = data.get(key, _MISSING)
    if value is _MISSING:
        raise AnnotationError(path, "top level", key, "is missing (COCO instances format)")
    if not isinstance(value, list):
        raise AnnotationError(path, "top level", key, f"must be a list, got {describe(value)}")
    return value


def _record(item: Any, path: Path, where: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise AnnotationError(path, where, "(record)", f"must be an object, got {describe(item)}")
    for key in keys:
        if key not in item:
            raise AnnotationError(path, where, key, "is missing")
    return item


def _size(image: dict[str, Any], key: str, path: Path, where: str, repairs: Repairs) -> int:
    value = image[key]
    if type(value) is float and value.is_integer():
        repairs.add(f"float image {key}s made integers")
        value = image[key] = int(value)
    return check_int(value, path, where, key, minimum=1)


def _images(raw: list[Any], path: Path, allow_outside_root: bool, repairs: Repairs):
    images: dict[int, dict[str, Any]] = {}
    owner_of_file: dict[str, int] = {}
    for i, item in enumerate(raw):
        image = _record(item, path, f"images[{i}]", ("id", "file_name", "width", "height"))
        image_id = check_int(image["id"], path, f"images[{i}]", "id")
        where = f"image id {image_id} (images[{i}])"
        if image_id in images:
            raise AnnotationError(path, where, "id", "is used by another image too")
        name = check_relative_path(image["file_name"], path, where, "file_name", allow_outside_root)
        other = owner_of_file.setdefault(name, image_id)
        if other != image_id:
            raise AnnotationError(
                path, where, "file_name", f"{name!r} is also the file of image id {other}"
            )
        _size(image, "width", path, where, repairs)
        _size(image, "height", path, where, repairs)
        images[image_id] = image
    return images


def _categories(raw: list[Any], path: Path) -> list[dict[str, Any]]:
    categories: dict[int, dict[str, Any]] = {}
    for i, item in enumerate(raw):
        cat = _record(item, path, f"categories[{i}]", ("id", "name"))
        cat_id = check_int(cat["id"], path, f"categories[{i}]", "id")
        where = f"category id {cat_id} (categories[{i}])"
        if cat_id in categories:
            raise AnnotationError(path, where, "id", "is used by another category too")
        if not isinstance(cat["name"], str) or not cat["name"]:
            raise AnnotationError(
                path, where, "name", f"must be a non-empty string, got {describe(cat['name'])}"
            )
        categories[cat_id] = cat
    if not categories:
        raise AnnotationError(path, "top level", "categories", "is empty")
    return [categories[c] for c in sorted(categories)]


def _annotation_ids(raw: list[Any], path: Path, repairs: Repairs) -> list[int]:
    """The id of every annotation: checked, unique; missing ones assigned above the max."""
    ids: list[Any] = []
    for i, ann in enumerate(raw):
        if not isinstance(ann, dict):
            raise AnnotationError(
                path, f"annotations[{i}]", "(record)", f"must be an object, got {describe(ann)}"
            )
        ann_id = ann.get("id", _MISSING)
        if ann_id is not _MISSING and (type(ann_id) is not int or ann_id < 1):
            if type(ann_id) is not int:
                problem = f"must be an integer, got {describe(ann_id)}"
            else:
                problem = f"must be >= 1 (pycocotools reads 0 as 'unmatched'), got {ann_id}"
            raise AnnotationError(path, f"annotations[{i}]", "id", problem)
        ids.append(ann_id)
    given = [a for a in ids if a is not _MISSING]
    if len(set(given)) != len(given):
        dup = first_duplicate(ids)
        assert dup is not None
        value, first, second = dup
        raise AnnotationError(
            path, f"annotation id {value} (annotations[{second}])", "id",
            f"is also the id of annotations[{first}]",
        )  # fmt: skip
    if len(given) != len(ids):
        next_id = max(given, default=0) + 1
        for i, ann_id in enumerate(ids):
            if ann_id is _MISSING:
                ids[i] = next_id
                next_id += 1
        repairs.add("missing annotation ids assigned", len(ids) - len(given))
    return ids


def validate_coco(data: Any, path: Path, allow_outside_root: bool = False) -> COCOContent:
    """Check every field of a parsed COCO instances file; build boxes and labels.

    Args:
        data: the parsed JSON.
        path: the file (for messages).
        allow_outside_root: accept absolute ``file_name`` values and ones with ``..``.

    Raises:
        AnnotationError: see the module docstring for the list.
    """
    if not isinstance(data, dict):
        raise AnnotationError(
            path, "top level", "(file)", f"must be an object, got {describe(data)}"
        )
    raw_images = _list(data, "images", path)
    raw_annotations = _list(data, "annotations", path)
    raw_categories = _list(data, "categories", path)
    repairs = Repairs(path)
    images = _images(raw_images, path, allow_outside_root, repairs)
    categories = _categories(raw_categories, path)
    label_of = {cat["id"]: i for i, cat in enumerate(categories)}
    ann_ids = _annotation_ids(raw_annotations, path, repairs)

    boxes: dict[int, list[list[float]]] = {i: [] for i in images}
    labels: dict[int, list[int]] = {i: [] for i in images}
    clean: list[dict[str, Any]] = []
    # The hot loop (860k records for COCO train): plain type tests, no helper calls on the
    # happy path; helpers only build the error message.
    for i, ann in enumerate(raw_annotations):
        ann_id = ann_ids[i]
        image_id = ann.get("image_id", _MISSING)
        cat = ann.get("category_id", _MISSING)
        bbox = ann.get("bbox", _MISSING)
        if type(image_id) is not int or image_id not in images:
            _bad_reference(ann, "image_id", image_id, images, path, ann_id, i)
        if type(cat) is not int or cat not in label_of:
            _bad_reference(ann, "category_id", cat, label_of, path, ann_id, i)
        if (
            type(bbox) is not list
            or len(bbox) != 4
            or not all(type(v) is float or type(v) is int for v in bbox)
        ):
            raise AnnotationError(
                path, f"annotation id {ann_id} (annotations[{i}])", "bbox",
                f"must be a list of 4 numbers [x, y, w, h], got {describe(bbox)}",
            )  # fmt: skip
        crowd = ann.get("iscrowd", 0)
        if type(crowd) is not int or (crowd != 0 and crowd != 1):
            raise AnnotationError(
                path, f"annotation id {ann_id} (annotations[{i}])", "iscrowd",
                f"must be 0 or 1, got {describe(crowd)}",
            )  # fmt: skip
        area = ann.get("area", _MISSING)
        if area is not _MISSING and (
            (type(area) is not float and type(area) is not int)
            or not math.isfinite(area)
            or area < 0
        ):
            raise AnnotationError(
                path, f"annotation id {ann_id} (annotations[{i}])", "area",
                f"must be a finite number >= 0, got {describe(area)}",
            )  # fmt: skip

        x, y, w, h = bbox
        if not (
            math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h)
        ) or not (w > 0 and h > 0):
            repairs.add("boxes without positive finite size dropped")
            continue
        image = images[image_id]
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(image["width"]), x + w), min(float(image["height"]), y + h)
        if x1 != x or y1 != y or x2 != x + w or y2 != y + h:
            if x2 <= x1 or y2 <= y1:
                repairs.add("boxes entirely outside their image dropped")
                continue
            repairs.add("boxes clipped to their image")
        if area is _MISSING:
            area = (x2 - x1) * (y2 - y1)
            repairs.add("missing areas set to the box area")
        clean.append(
            {
                **ann,
                "id": ann_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(area),
                "iscrowd": crowd,
            }
        )
        if not crowd:  # crowd regions are "ignore" areas for the evaluator, not targets
            boxes[image_id].append([x1, y1, x2, y2])
            labels[image_id].append(label_of[cat])
    return COCOContent(
        images=images,
        categories=categories,
        boxes={k: np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()},
        labels={k: np.asarray(v, dtype=np.int64) for k, v in labels.items()},
        annotations=clean,
        repairs=repairs,
    )


def _bad_reference(
    ann: dict[str, Any], key: str, value: Any, known: Any, path: Path, ann_id: int, index: int
) -> None:
    where = f"annotation id {ann_id} (annotations[{index}])"
    if value is _MISSING:
        raise AnnotationError(path, where, key, "is missing")
    if type(value) is not int:
        raise AnnotationError(path, where, key, f"must be an integer, got {describe(value)}")
    what = "image" if key == "image_id" else "category"
    choices = sorted(known)
    shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
    raise AnnotationError(path, where, key, f"{value} names no {what} (ids: {shown})")
