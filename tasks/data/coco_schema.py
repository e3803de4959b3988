"""Field-by-field validation of a COCO instances file, in one pass over its records.

Errors (``AnnotationError``: file, record, field), because they would change a metric or
pair an image with another's objects:

- the file is not an object, or ``images`` / ``annotations`` / ``categories`` is not a list;
- a record that is not an object; a required field missing;
- ids that are not integers (strings, floats, ``true``) or do not fit int64, negative
  image or category ids, annotation ids ``<= 0`` (pycocotools uses 0 for "unmatched"),
  duplicate image, category or annotation ids;
- ``width`` / ``height`` not positive integers; ``file_name`` not a string, used twice,
  absolute or leaving the image folder through ``..`` (unless ``allow_outside_root``);
- ``image_id`` / ``category_id`` of an annotation naming no image / category;
- ``bbox`` not a list of 4 numbers (strings, ``null``), or with a non-finite value or a
  negative width or height; ``area`` not a finite number ``>= 0``; ``iscrowd`` not 0 or 1;
  an integer beyond float range in ``bbox`` or ``area``;
- with ``masks=True`` (the data modules that draw masks), a ``segmentation`` that is not
  a valid polygon list or RLE of its image (``tasks.data.coco_masks``).

Repairs (counted, logged in one line), because they leave the metric as it is:

- missing annotation ids get fresh ids above the largest one;
- missing ``area`` is the box area;
- integral float ``width`` / ``height`` (``640.0``) become integers;
- training targets only: zero-size boxes are left out, boxes reaching outside their image
  are clipped (left out when nothing is left). The evaluator's ground truth keeps every
  box as written, so ``validate`` / ``test`` score exactly what pycocotools scores on the
  file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.coco_masks import check_segmentation
from tasks.data.validate import (
    INT64_MAX,
    AnnotationError,
    Repairs,
    check_int,
    check_relative_path,
    describe,
)

_MISSING = object()


@dataclass
class COCOContent:
    """What ``validate_coco`` returns.

    Attributes:
        images: ``{image_id: image dict}``.
        categories: category dicts sorted by id.
        boxes: ``{image_id: [N, 4] float32}`` (x1, y1, x2, y2) training targets: non-crowd
            boxes of positive size, clipped to their image.
        labels: ``{image_id: [N] int64}`` contiguous labels (index into ``categories``).
        annotations: every annotation (crowd ones included), boxes as written, for the
            evaluator.
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
            first = next(j for j, im in enumerate(raw) if im["id"] == image_id)
            raise AnnotationError(
                path, where, "id", f"is also the id of images[{first}] (file names would mix)"
            )
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
            first = next(j for j, c in enumerate(raw) if c["id"] == cat_id)
            raise AnnotationError(path, where, "id", f"is also the id of categories[{first}]")
        if not isinstance(cat["name"], str) or not cat["name"]:
            raise AnnotationError(
                path, where, "name", f"must be a non-empty string, got {describe(cat['name'])}"
            )
        categories[cat_id] = cat
    if not categories:
        raise AnnotationError(path, "top level", "categories", "is empty")
    return [categories[c] for c in sorted(categories)]


def _duplicate_annotation_id(raw: list[dict[str, Any]], path: Path) -> None:
    """Raise for the first repeated annotation id (only called once one is known)."""
    first: dict[int, int] = {}
    for i, ann in enumerate(raw):
        ann_id = ann.get("id", _MISSING)
        if ann_id is _MISSING:
            continue
        j = first.setdefault(ann_id, i)
        if j != i:
            raise AnnotationError(
                path, f"annotation id {ann_id} (annotations[{i}])", "id",
                f"is also the id of annotations[{j}]",
            )  # fmt: skip


def _where(ann_id: Any, index: int) -> str:
    if type(ann_id) is int:
        return f"annotation id {ann_id} (annotations[{index}])"
    return f"annotations[{index}]"


def validate_coco(
    data: Any, path: Path, allow_outside_root: bool = False, masks: bool = False
) -> COCOContent:
    """Check every field of a parsed COCO instances file; build boxes and labels.

    Args:
        data: the parsed JSON; its annotation records are cleaned in place.
        path: the file (for messages).
        allow_outside_root: accept absolute ``file_name`` values and ones with ``..``.
        masks: also check ``segmentation`` (``tasks.data.coco_masks``), for the data
            modules that draw masks from it; detection never reads it.

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
    sizes = {i: (float(im["width"]), float(im["height"])) for i, im in images.items()}

    given_ids: list[int] = []
    without_id: list[dict[str, Any]] = []
    clean: list[dict[str, Any]] = []
    keep_image: list[int] = []
    keep_label: list[int] = []
    keep_box: list[tuple[float, float, float, float]] = []
    isfinite, number = math.isfinite, (float, int)
    empty = outside = clipped = no_area = 0
    # The hot loop (860k records for COCO train): plain type tests and local names, no
    # helper calls on the happy path; helpers only build error messages. Records are
    # cleaned in place (no copy).
    i, ann = -1, None
    try:
        for i, ann in enumerate(raw_annotations):
            if type(ann) is not dict:
                raise AnnotationError(
                    path, f"annotations[{i}]", "(record)", f"must be an object, got {describe(ann)}"
                )
            ann_id = ann.get("id", _MISSING)
            if type(ann_id) is int and 1 <= ann_id <= INT64_MAX:
                given_ids.append(ann_id)
            elif ann_id is not _MISSING:
                if type(ann_id) is not int:
                    problem = f"must be an integer, got {describe(ann_id)}"
                else:
                    problem = (
                        f"must be in 1..{INT64_MAX} (pycocotools reads 0 as 'unmatched'), got "
                        f"{describe(ann_id)}"
                    )
                raise AnnotationError(path, f"annotations[{i}]", "id", problem)
            image_id = ann.get("image_id", _MISSING)
            size = sizes.get(image_id) if type(image_id) is int else None
            if size is None:
                _bad_reference("image_id", image_id, images, path, _where(ann_id, i))
            cat = ann.get("category_id", _MISSING)
            label = label_of.get(cat) if type(cat) is int else None
            if label is None:
                _bad_reference("category_id", cat, label_of, path, _where(ann_id, i))
            bbox = ann.get("bbox", _MISSING)
            if type(bbox) is not list or len(bbox) != 4:
                _bad_bbox(bbox, path, _where(ann_id, i))
            x, y, w, h = bbox
            if (
                type(x) not in number
                or type(y) not in number
                or type(w) not in number
                or type(h) not in number
            ):
                _bad_bbox(bbox, path, _where(ann_id, i))
            crowd = ann.get("iscrowd", _MISSING)
            if crowd is _MISSING:
                crowd = ann["iscrowd"] = 0
            elif type(crowd) is not int or (crowd != 0 and crowd != 1):
                raise AnnotationError(
                    path, _where(ann_id, i), "iscrowd", f"must be 0 or 1, got {describe(crowd)}"
                )
            area = ann.get("area", _MISSING)
            if area is not _MISSING and (
                type(area) not in number or not isfinite(area) or area < 0
            ):
                raise AnnotationError(
                    path,
                    _where(ann_id, i),
                    "area",
                    f"must be a finite number >= 0, got {describe(area)}",
                )

            if not (isfinite(x) and isfinite(y) and isfinite(w) and isfinite(h)) or w < 0 or h < 0:
                raise AnnotationError(
                    path, _where(ann_id, i), "bbox",
                    f"must have finite x, y and width, height >= 0, got {describe(bbox)}",
                )  # fmt: skip
            if masks:
                seg = ann.get("segmentation")
                if seg:
                    ann["segmentation"] = check_segmentation(
                        seg, *size, path, _where(ann_id, i), repairs
                    )
            if area is _MISSING:
                ann["area"] = float(w * h)
                no_area += 1
            if ann_id is _MISSING:
                without_id.append(ann)
            # The evaluator scores against the box as written, as pycocotools would on this file;
            # only the training target is dropped or clipped.
            clean.append(ann)
            if crowd:  # crowd regions are "ignore" areas for the evaluator, not targets
                continue
            if w == 0 or h == 0:
                empty += 1
                continue
            width, height = size
            x2, y2 = x + w, y + h
            if x < 0 or y < 0 or x2 > width or y2 > height:
                x, y = max(0.0, x), max(0.0, y)
                x2, y2 = min(width, x2), min(height, y2)
                if x2 <= x or y2 <= y:
                    outside += 1
                    continue
                clipped += 1
            keep_image.append(image_id)
            keep_label.append(label)
            keep_box.append((x, y, x2, y2))
    except OverflowError:  # an integer beyond float range: math.isfinite cannot take it
        raise AnnotationError(
            path, _where(ann.get("id"), i), _too_large(ann),
            "holds an integer too large for a float (it must be a finite number)",
        ) from None  # fmt: skip

    if len(set(given_ids)) != len(given_ids):
        _duplicate_annotation_id(raw_annotations, path)
    next_id = max(given_ids, default=0) + 1
    for k, ann in enumerate(without_id):
        ann["id"] = next_id + k
    repairs.add("missing annotation ids assigned", len(without_id))
    repairs.add("zero-size boxes left out of training targets", empty)
    repairs.add("boxes outside their image left out of training targets", outside)
    repairs.add("training targets clipped to their image", clipped)
    repairs.add("missing areas set to the box area", no_area)
    boxes, labels = _group_by_image(images, keep_image, keep_box, keep_label)
    return COCOContent(
        images=images,
        categories=categories,
        boxes=boxes,
        labels=labels,
        annotations=clean,
        repairs=repairs,
    )


def _group_by_image(
    images: dict[int, Any],
    image_ids: list[int],
    boxes: list[tuple[float, float, float, float]],
    labels: list[int],
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per image ``[N, 4] float32`` boxes and ``[N] int64`` labels, in file order."""
    ids = np.asarray(image_ids, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    all_boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[order]
    all_labels = np.asarray(labels, dtype=np.int64)[order]
    unique, starts = np.unique(ids[order], return_index=True)
    by_image_boxes = {i: np.zeros((0, 4), dtype=np.float32) for i in images}
    by_image_labels = {i: np.zeros(0, dtype=np.int64) for i in images}
    bounds = [*starts.tolist(), len(ids)]
    for k, image_id in enumerate(unique.tolist()):
        by_image_boxes[image_id] = all_boxes[bounds[k] : bounds[k + 1]]
        by_image_labels[image_id] = all_labels[bounds[k] : bounds[k + 1]]
    return by_image_boxes, by_image_labels


def _too_large(ann: dict[str, Any]) -> str:
    """The field of ``ann`` that holds an integer beyond float range."""
    for key in ("bbox", "area"):
        values = ann.get(key)
        for v in values if type(values) is list else [values]:
            if type(v) is int and abs(v) > 2**1023:
                return key
    return "(record)"


def _bad_bbox(bbox: Any, path: Path, where: str) -> None:
    raise AnnotationError(
        path, where, "bbox", f"must be a list of 4 numbers [x, y, w, h], got {describe(bbox)}"
    )


def _bad_reference(key: str, value: Any, known: Any, path: Path, where: str) -> None:
    if value is _MISSING:
        raise AnnotationError(path, where, key, "is missing")
    if type(value) is not int:
        raise AnnotationError(path, where, key, f"must be an integer, got {describe(value)}")
    what = "image" if key == "image_id" else "category"
    choices = sorted(known)
    shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
    raise AnnotationError(path, where, key, f"{value} names no {what} (ids: {shown})")
