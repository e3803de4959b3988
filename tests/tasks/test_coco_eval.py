"""Our COCO evaluation equals pycocotools run directly, on random detections."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.metrics.coco import STAT_NAMES, COCOEvaluator, detections_to_coco, evaluate_coco

CATEGORY_IDS = [1, 3, 7]  # non-contiguous, like COCO's


def make_ground_truth(num_images: int = 12, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        w, h = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": w, "height": h})
        count = 0 if image_id % 5 == 0 else int(rng.integers(1, 6))  # some images are empty
        for _ in range(count):
            bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": int(rng.random() < 0.1),
                }
            )
    categories = [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def make_results(gt: dict, seed: int = 1) -> list[dict]:
    """Jittered copies of most ground-truth boxes plus random false positives."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in gt["annotations"]:
        if rng.random() < 0.8:
            x, y, w, h = ann["bbox"]
            jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
            cat = ann["category_id"] if rng.random() < 0.9 else int(rng.choice(CATEGORY_IDS))
            box = [x + jitter[0], y + jitter[1], abs(w + jitter[2]) + 1, abs(h + jitter[3]) + 1]
            results.append(
                {
                    "image_id": ann["image_id"],
                    "category_id": cat,
                    "bbox": box,
                    "score": float(rng.random()),
                }
            )
    for image in gt["images"]:
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(0, image["width"] - 20), rng.uniform(0, image["height"] - 20)
            box = [x, y, rng.uniform(5, 60), rng.uniform(5, 60)]
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": box,
                    "score": float(rng.random() * 0.5),
                }
            )
    return results


def pycocotools_directly(gt_file, results: list[dict], image_ids=None) -> list[float]:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_pycocotools_on_random_detections(tmp_path, seed):
    gt = make_ground_truth(seed=seed)
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    results = make_results(gt, seed=seed + 10)
    ours = evaluate_coco(gt, results)
    ref = pycocotools_directly(gt_file, [dict(r) for r in results])
    assert list(ours) == list(STAT_NAMES)
    assert list(ours.values()) == ref  # exactly, not approximately
    assert 0.05 < ours["map"] < 0.95  # a meaningful, non-trivial case


def test_subset_of_images(tmp_path):
    gt = make_ground_truth()
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps(gt))
    results = make_results(gt)
    ids = [1, 2, 3, 5, 8]
    assert list(evaluate_coco(gt, results, ids).values()) == pycocotools_directly(
        gt_file, results, ids
    )


def test_faster_coco_eval_agrees():
    pytest.importorskip("faster_coco_eval")
    gt = make_ground_truth(seed=3)
    results = make_results(gt, seed=4)
    ref = evaluate_coco(gt, results)
    fast = evaluate_coco(gt, results, backend="faster_coco_eval")
    for name in STAT_NAMES:
        assert fast[name] == pytest.approx(ref[name], abs=1e-12), name


def test_no_detections_gives_zeros_not_an_error():
    gt = make_ground_truth()
    stats = evaluate_coco(gt, [])
    assert stats["map"] == 0.0 and stats["mar_100"] == 0.0


def test_evaluator_deduplicates_padded_images():
    gt = make_ground_truth()
    per_image: dict[int, list[dict]] = {}
    for r in make_results(gt):
        per_image.setdefault(r["image_id"], []).append(r)
    ids = [i["id"] for i in gt["images"]]
    evaluator = COCOEvaluator(gt)
    evaluator.update({i: per_image.get(i, []) for i in ids})
    evaluator.update({ids[0]: per_image.get(ids[0], [])})  # the same image seen twice
    assert evaluator.num_images == len(ids)
    assert evaluator.compute() == evaluate_coco(gt, [r for v in per_image.values() for r in v])


def test_detections_to_coco_maps_back_to_original_pixels_and_ids():
    det = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([2]),
    }
    out = detections_to_coco([det], [42], [(2.0, 0.5)], CATEGORY_IDS)
    assert out == {
        42: [{"image_id": 42, "category_id": 7, "bbox": [20.0, 10.0, 40.0, 20.0], "score": 0.5}]
    }


def test_bad_backend_is_named():
    with pytest.raises(ValueError, match="pycocotools.*faster_coco_eval.*got 'detectron'"):
        COCOEvaluator(make_ground_truth(), backend="detectron")  # type: ignore[arg-type]
