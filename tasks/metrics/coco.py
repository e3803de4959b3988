"""Official COCO box metrics (pycocotools ``COCOeval``), exact on one process and under DDP.

Each process collects COCO-format results per image id. At the end of the epoch one
``all_gather_object`` brings them together, results are de-duplicated by image id (so an
image that a padded sampler hands to two processes counts once), rank 0 runs COCOeval on
exactly the images seen, and the 12 numbers are broadcast to every rank.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

EvalBackend = Literal["pycocotools", "faster_coco_eval"]
EVAL_BACKENDS: tuple[str, ...] = ("pycocotools", "faster_coco_eval")
#: names of ``COCOeval.stats`` in order (AP@[.5:.95], AP50, AP75, APs/m/l, AR1/10/100, ARs/m/l)
STAT_NAMES = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)


def _api(backend: str) -> tuple[Any, Any]:
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as err:  # pragma: no cover - optional dependency
            raise ImportError(
                "eval_backend='faster_coco_eval' needs `pip install faster-coco-eval`"
            ) from err
        return COCO, COCOeval_faster
    raise ValueError(f"eval backend must be one of {EVAL_BACKENDS}, got {backend!r}")


def _coco_from_dict(coco_cls: Any, dataset: dict[str, Any]) -> Any:
    coco = coco_cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate_coco(
    ground_truth: dict[str, Any],
    results: Sequence[dict[str, Any]],
    image_ids: Iterable[int] | None = None,
    backend: EvalBackend = "pycocotools",
    details: dict[str, Any] | None = None,
) -> dict[str, float]:
    """COCOeval (``iouType="bbox"``) of ``results`` against ``ground_truth``.

    Args:
        ground_truth: COCO instances dict (``images``, ``annotations`` with ``area`` and
            ``iscrowd``, ``categories``).
        results: COCO result dicts ``{image_id, category_id, bbox: [x, y, w, h], score}``
            with the original category ids.
        image_ids: the images to score (``params.imgIds``); default: all images of
            ``ground_truth``. Images evaluated with no result count as misses.
        backend: ``"pycocotools"`` (the reference) or ``"faster_coco_eval"`` (same
            numbers, faster).
        details: if given, filled with COCOeval's ``precision`` array ``[T, R, K, A, M]``
            (IoU thresholds, recall points, categories, areas, max detections; -1 where
            undefined), ``iou_thresholds`` ``[T]``, ``recall_thresholds`` ``[R]`` and
            ``category_ids`` ``[K]`` (for per-class AP and precision-recall plots).

    Returns:
        ``{name: value}`` for the 12 ``STAT_NAMES``; -1 where COCOeval has nothing to score
        (e.g. no small objects), as pycocotools reports it.
    """
    coco_cls, eval_cls = _api(backend)
    gt = _coco_from_dict(coco_cls, copy.deepcopy(ground_truth))
    ids = sorted(int(i) for i in (gt.getImgIds() if image_ids is None else image_ids))
    unknown = set(ids) - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"image ids {sorted(unknown)[:5]} are not in the ground truth")
    wanted = set(ids)
    results = [r for r in results if int(r["image_id"]) in wanted]
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            dt = gt.loadRes(copy.deepcopy(list(results)))
    else:
        # loadRes([]) raises; an empty result set is a valid (all-miss) evaluation.
        empty = {
            "images": gt.dataset["images"],
            "categories": copy.deepcopy(gt.dataset["categories"]),
            "annotations": [],
        }
        dt = _coco_from_dict(coco_cls, empty)
    kwargs = {"print_function": lambda *a, **k: None} if backend == "faster_coco_eval" else {}
    evaluator = eval_cls(gt, dt, iouType="bbox", **kwargs)
    evaluator.params.imgIds = ids
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if details is not None:
        details["precision"] = np.asarray(evaluator.eval["precision"], dtype=np.float64)
        details["iou_thresholds"] = np.asarray(evaluator.params.iouThrs, dtype=np.float64)
        details["recall_thresholds"] = np.asarray(evaluator.params.recThrs, dtype=np.float64)
        details["category_ids"] = [int(c) for c in evaluator.params.catIds]
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats, strict=True)}


def detections_to_coco(
    detections: Sequence[dict[str, Tensor]],
    image_ids: Sequence[int],
    scales: Sequence[tuple[float, float]],
    category_ids: Sequence[int],
) -> dict[int, list[dict[str, Any]]]:
    """Per image, COCO result dicts in original image coordinates and category ids.

    Args:
        detections: per image ``boxes`` ``[D, 4]`` (x1, y1, x2, y2, input pixels),
            ``scores`` ``[D]``, ``labels`` ``[D]`` (contiguous).
        image_ids: COCO image id of each image.
        scales: ``(sx, sy)`` per image: original size / input size.
        category_ids: ``category_ids[label]`` is the COCO category id.

    Returns:
        ``{image_id: [{image_id, category_id, bbox: [x, y, w, h], score}, ...]}``.
    """
    cat = torch.as_tensor(list(category_ids))
    out: dict[int, list[dict[str, Any]]] = {}
    for det, image_id, (sx, sy) in zip(detections, image_ids, scales, strict=True):
        boxes = det["boxes"].detach().float().cpu() * torch.tensor([sx, sy, sx, sy])
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        cats = cat[det["labels"].cpu()].tolist()
        scores = det["scores"].detach().float().cpu().tolist()
        out[int(image_id)] = [
            {"image_id": int(image_id), "category_id": int(c), "bbox": b, "score": s}
            for b, c, s in zip(xywh, cats, scores, strict=True)
        ]
    return out


def batch_to_coco(
    detections: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]],
    input_size: Sequence[int],
    category_ids: Sequence[int],
) -> dict[int, list[dict[str, Any]]]:
    """``detections_to_coco`` for a batch whose targets carry ``image_id`` and
    ``orig_size`` ``(H, W)``; boxes are in pixels of the ``input_size`` ``(H, W)``."""
    height, width = (int(v) for v in input_size)
    scales = [
        (float(t["orig_size"][1]) / width, float(t["orig_size"][0]) / height) for t in targets
    ]
    image_ids = [int(t["image_id"]) for t in targets]
    return detections_to_coco(detections, image_ids, scales, category_ids)


class COCOEvaluator:
    """Accumulates detections over an epoch and computes the 12 COCO numbers.

    Args:
        ground_truth: COCO instances dict of the evaluated split.
        backend: ``"pycocotools"`` or ``"faster_coco_eval"``.

    ``update`` per batch (no communication), ``compute`` once per epoch on every rank
    (it is collective under DDP: all ranks must call it), ``reset`` before the next epoch.
    """

    def __init__(self, ground_truth: dict[str, Any], backend: EvalBackend = "pycocotools") -> None:
        _api(backend)  # fail early on a bad name or a missing package
        self.ground_truth = ground_truth
        self.backend = backend
        self.reset()

    def reset(self) -> None:
        self._results: dict[int, list[dict[str, Any]]] = {}

    #: ``evaluate_coco``'s details of the last ``compute`` (on rank 0 under DDP)
    last_details: dict[str, Any] = {}

    def update(self, results: dict[int, list[dict[str, Any]]]) -> None:
        """Add ``{image_id: [COCO result dicts]}`` (see ``detections_to_coco``)."""
        self._results.update(results)

    @property
    def num_images(self) -> int:
        return len(self._results)

    def compute(self) -> dict[str, float]:
        """Gather from every rank, evaluate once on rank 0, broadcast; ``STAT_NAMES`` keys."""
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not distributed:
            return self._evaluate([self._results])
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._results)
        stats = [self._evaluate(gathered) if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(stats, src=0)
        return stats[0]

    def _evaluate(self, parts: Sequence[dict[int, list[dict[str, Any]]]]) -> dict[str, float]:
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            for image_id, dets in part.items():
                merged.setdefault(image_id, dets)  # a padded duplicate counts once
        results = [r for dets in merged.values() for r in dets]
        self.last_details = {}
        return evaluate_coco(
            self.ground_truth, results, merged.keys(), self.backend, self.last_details
        )
