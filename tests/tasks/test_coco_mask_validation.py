"""COCO ``segmentation`` fields are checked at setup by the data modules that draw masks:
a hostile polygon or RLE is one ``AnnotationError`` naming the file, the record and the
field, never a rasterizer that grows without bound or a crash inside pycocotools."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tasks.data.coco import COCOAnnotations
from tasks.data.coco_joint import semantic_mask
from tasks.data.validate import AnnotationError
from tests.tasks.test_annotation_validation import coco_dict, write_json

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 40.0, 10.0, 40.0]


def _rle(height: int, width: int) -> dict[str, Any]:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[5:9, 3:7] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _with_segmentation(seg: Any) -> dict[str, Any]:
    data = coco_dict()  # annotation id 1 lies on image 1 (100 x 80)
    data["annotations"][0]["segmentation"] = seg
    return data


BAD = {
    "NaN coordinate": ([[float("nan"), 10, 30, 10, 30, 40]], "NaN"),
    "infinite coordinate": ([[10, 10, 30, float("-inf"), 30, 40]], "infinite"),
    "1e7 coordinate": ([[10, 10, 1e7, 10, 30, 40]], "far outside"),
    "huge integer": ([[10, 10, 10**400, 10, 30, 40]], "far outside"),
    "string coordinate": ([["10", 10, 30, 10, 30, 40]], "'10'"),
    "odd length": ([[10, 10, 30, 10, 30]], "odd number"),
    "flat list": ([10, 10, 30, 10, 30, 40], "item 0 is 10"),
    "string": ("polygon", "got 'polygon'"),
    "number": (7, "got 7"),
    "RLE without counts": ({"size": [80, 100]}, "'counts'"),
    "RLE garbage counts": ({"size": [80, 100], "counts": "\x01\x02!!"}, "not a compressed"),
    "RLE cut short": ({"size": [80, 100], "counts": "gg"}, "cut short"),
    "RLE of another size": ({"size": [10, 10], "counts": [100]}, "[80, 100]"),
    "RLE counts not covering the image": ({"size": [80, 100], "counts": [5, 5]}, "10 pixels"),
    "RLE negative count": ({"size": [80, 100], "counts": [8100, -100]}, "-100"),
    "RLE counts a dict": ({"size": [80, 100], "counts": {"a": 1}}, "compressed string"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_hostile_segmentation_names_file_record_and_field(tmp_path: Path, case: str) -> None:
    seg, hint = BAD[case]
    path = write_json(tmp_path, _with_segmentation(seg))
    with pytest.raises(AnnotationError) as info:
        COCOAnnotations(path, masks=True)
    message = str(info.value)
    assert message.startswith(f"{path}: annotation id 1 (annotations[0]): field 'segmentation'")
    assert hint in message and len(message) < 400


@pytest.mark.parametrize("case", list(BAD))
def test_detection_does_not_read_segmentation(tmp_path: Path, case: str) -> None:
    # boxes only: a segmentation changes no detection number, so it is not a reason to stop
    path = write_json(tmp_path, _with_segmentation(BAD[case][0]))
    assert len(COCOAnnotations(path).ground_truth["annotations"]) == 3


def test_valid_polygons_and_rle_are_drawn(tmp_path: Path) -> None:
    data = coco_dict()
    data["annotations"][0]["segmentation"] = [SQUARE]
    data["annotations"][1]["segmentation"] = _rle(80, 100)  # a crowd region as RLE
    data["annotations"][2]["segmentation"] = {
        "size": [50, 50],
        "counts": _uncompressed(_rle(50, 50)),
    }
    ann = COCOAnnotations(write_json(tmp_path, data), masks=True)
    assert not ann.repairs.counts
    per_image = [a for a in ann.ground_truth["annotations"] if a["image_id"] == 1]
    mask = semantic_mask(per_image, {3: 0, 9: 1}, 80, 100)
    assert (mask[10:40, 10:30] == 1).all() and (mask[5:9, 3:7] == 255).all()


def _uncompressed(rle: dict[str, Any]) -> list[int]:
    mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    flat = mask.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = [0, *change.tolist(), len(flat)]
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0, *runs]


def test_degenerate_polygons_are_left_out_counted_and_logged(tmp_path: Path, caplog) -> None:
    # a 2-point "polygon" has no area; pycocotools would read [x, y, x, y] as a *box*
    data = _with_segmentation([[10, 10, 30, 40], SQUARE, []])
    data["annotations"][2]["segmentation"] = [[1, 2, 3, 4]]
    with caplog.at_level(logging.WARNING):
        ann = COCOAnnotations(write_json(tmp_path, data), masks=True)
    assert ann.repairs["degenerate polygons (< 3 points) left out of masks"] == 3
    assert "3 degenerate polygons (< 3 points) left out of masks" in caplog.text
    first, _, last = ann.ground_truth["annotations"]
    assert first["segmentation"] == [SQUARE]
    assert last["segmentation"] == []  # nothing left: the object is not drawn
    mask = semantic_mask([first], {3: 0, 9: 1}, 80, 100)
    assert mask.sum() == 20 * 30  # the square only, no box from [10, 10, 30, 40]


def test_json_nested_too_deeply_is_one_annotation_error(tmp_path: Path) -> None:
    path = tmp_path / "instances_val.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(AnnotationError, match="nests too deeply"):
        COCOAnnotations(path)


def test_integers_beyond_float_range_are_annotation_errors(tmp_path: Path) -> None:
    for key, value in (("bbox", [10**400, 0, 1, 1]), ("area", 10**400)):
        data = coco_dict()
        data["annotations"][0][key] = value
        with pytest.raises(AnnotationError, match=f"field '{key}' holds an integer too large"):
            COCOAnnotations(write_json(tmp_path, data))
    path = tmp_path / "digits.json"
    path.write_text(json.dumps(coco_dict()).replace('"area": 600.0', '"area": ' + "9" * 5000))
    with pytest.raises(AnnotationError, match="is not valid JSON"):  # Python's digit limit
        COCOAnnotations(path)
