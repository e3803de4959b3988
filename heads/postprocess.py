"""From raw SSD outputs to detections: softmax, score threshold, per-class top-k,
class-wise NMS and a cap on detections per image.

The rule is the usual SSD one (per class: the ``topk_per_class`` best anchors above the
threshold; class-wise NMS; the ``max_detections`` best survivors per image), computed
cheaply: the (anchor, class) pairs above the threshold are pruned to the
``topk_candidates`` best of the image *before* NMS, and only those are decoded and
suppressed. The pruned set is a prefix of the score order, so every NMS decision inside it
is the full rule's (a box is only suppressed by higher-scoring boxes of its class, which are
all in the prefix) and so is every per-class rank. The result is the full rule's whenever
the prefix holds ``max_detections`` survivors (or all candidates): with 1000 candidates for
100 detections that is the normal case. With 80 classes and 2034 anchors this replaces 80 top-k's and
NMS over up to 24000 boxes by one top-k and NMS over at most 1000. That top-k only looks
at pairs at or above ``pair_floor``, a bound that never excludes one of the best pairs
(a few thousand pairs of an image instead of 160,000 when every pair passes the threshold,
as an untrained model's do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image, nms

from heads.box_coder import BoxCoder

#: how class logits become scores
ScoreActivation = Literal["softmax", "sigmoid"]


def pair_floor(probs: Tensor, k: int) -> Tensor | None:
    """A score that the ``k`` best (anchor, class) pairs all reach: ``[..., A, C]`` ->
    ``[..., 1]``, or ``None`` when there are fewer than ``k`` anchors.

    The ``k`` best anchors' best classes are ``k`` distinct pairs scoring at least the
    ``k``-th best anchor's best score, so the ``k``-th best pair scores at least that too:
    no pair below it is among the ``k`` best. Combined with a score threshold the bound
    stays exact (if fewer than ``k`` pairs pass the threshold, the floor is at or below it).
    """
    if probs.shape[-2] < k:
        return None
    return probs.amax(dim=-1).topk(k, dim=-1).values[..., -1:]


@dataclass(frozen=True)
class PostprocessOptions:
    """How raw SSD outputs become detections: the ``postprocess`` argument of the detectors'
    builders, models and tasks (``model.init_args.postprocess.score_threshold`` in a
    config; ``PostprocessOptions(score_threshold=0.3)`` from Python).

    Args:
        score_threshold: drop candidates whose class probability is not above this
            (evaluation: keep it low).
        nms_iou: IoU threshold of the class-wise non-maximum suppression.
        max_detections: detections kept per image, highest scores first.
        topk_per_class: keep at most this many candidates per class before NMS.
        topk_candidates: (anchor, class) pairs per image, highest scores first, that
            enter NMS (the pruning budget; ``None``: all pairs above the threshold).
        class_agnostic_nms: TF Lite's fast NMS instead (what TF's detection exports run):
            each anchor keeps its best class, one suppression runs across all classes.

    Raises:
        ValueError: a value out of range, named with the value given.
    """

    score_threshold: float = 0.001
    nms_iou: float = 0.55
    max_detections: int = 100
    topk_per_class: int = 300
    topk_candidates: int | None = 1000
    class_agnostic_nms: bool = False

    def __post_init__(self) -> None:
        # written as "not inside" so that NaN is refused too
        if not 0 <= self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0 < self.nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.topk_per_class < 1 or self.max_detections < 1:
            raise ValueError(
                f"topk_per_class and max_detections must be >= 1, got {self.topk_per_class} "
                f"and {self.max_detections}"
            )
        if self.topk_candidates is not None and self.topk_candidates < self.max_detections:
            raise ValueError(
                f"topk_candidates must be None or >= max_detections ({self.max_detections}), "
                f"got {self.topk_candidates}"
            )


class SSDPostprocessor:
    """Turn ``[B, A, C + 1]`` logits and ``[B, A, 4]`` codes into per-image detections.

    Args:
        box_coder: decodes the codes against the anchors.
        options: thresholds and caps (``PostprocessOptions``); replace ``options`` (a frozen
            dataclass: ``dataclasses.replace``) to change them on a built model.
        score_activation: ``"softmax"`` over background + classes (how this zoo trains), or
            ``"sigmoid"`` per class (how TF's SSD models were trained: their released
            weights give TF's scores only with it).
        class_agnostic: TF Lite's fast NMS (``TFLite_Detection_PostProcess`` with
            ``use_regular_nms=false``, what TF's detection exports run): each anchor keeps
            only its best class, and one NMS runs over all classes together
            (``topk_per_class`` then does not apply).
    """

    def __init__(
        self,
        box_coder: BoxCoder | None = None,
        options: PostprocessOptions = PostprocessOptions(),
        score_activation: ScoreActivation = "softmax",
    ) -> None:
        if score_activation not in ("softmax", "sigmoid"):
            raise ValueError(
                f"score_activation must be 'softmax' or 'sigmoid', got {score_activation!r}"
            )
        self.score_activation = score_activation
        self.box_coder = box_coder or BoxCoder()
        self.options = options

    def __call__(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        image_size: Sequence[int],
    ) -> list[dict[str, Tensor]]:
        """Detections per image.

        Args:
            cls_logits: ``[B, A, C + 1]`` logits, index 0 = background.
            box_deltas: ``[B, A, 4]`` box codes.
            anchors: ``[A, 4]`` anchors in input pixels.
            image_size: ``(H, W)`` of the input; boxes are clipped to it.

        Returns:
            ``B`` dicts: ``boxes`` ``[D, 4]`` float (x1, y1, x2, y2, input pixels),
            ``scores`` ``[D]`` float, ``labels`` ``[D]`` int64 in ``0..C-1``; ``D <=
            max_detections``, sorted by decreasing score.
        """
        probs = self.class_scores(cls_logits.float())  # [B, A, C]
        size = (int(image_size[0]), int(image_size[1]))
        return [
            self._single(p, d, anchors.float(), size)
            for p, d in zip(probs, box_deltas.float(), strict=True)
        ]

    def class_scores(self, cls_logits: Tensor) -> Tensor:
        """``[..., C + 1]`` logits (index 0 = background) -> ``[..., C]`` class scores."""
        if self.score_activation == "sigmoid":
            return torch.sigmoid(cls_logits)[..., 1:]
        return torch.softmax(cls_logits, dim=-1)[..., 1:]

    def _single(
        self, probs: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        if self.options.class_agnostic_nms:
            return self._single_agnostic(probs, deltas, anchors, image_size)
        opts, num_classes = self.options, probs.shape[1]
        flat = probs.flatten()  # [A * C], anchor-major
        above = flat > opts.score_threshold
        if opts.topk_candidates is not None:
            floor = pair_floor(probs, opts.topk_candidates)
            above = above if floor is None else above & (flat >= floor)
        idx = torch.nonzero(above).squeeze(1)
        scores = flat[idx]
        if opts.topk_candidates is not None and len(idx) > opts.topk_candidates:
            scores, order = scores.topk(opts.topk_candidates)
        else:
            scores, order = scores.sort(descending=True)
        idx = idx[order]
        anchor_idx, labels = idx // num_classes, idx % num_classes
        # Scores are sorted: a pair's rank in its class is the count of its class before it.
        one_hot = torch.nn.functional.one_hot(labels, num_classes)
        rank = (one_hot.cumsum(0) * one_hot).sum(1) - 1
        keep = rank < opts.topk_per_class
        scores, anchor_idx, labels = scores[keep], anchor_idx[keep], labels[keep]
        cand = clip_boxes_to_image(
            self.box_coder.decode(deltas[anchor_idx], anchors[anchor_idx]), image_size
        )
        keep = batched_nms(cand, scores, labels, opts.nms_iou)[: opts.max_detections]
        return {"boxes": cand[keep], "scores": scores[keep], "labels": labels[keep]}

    def _single_agnostic(
        self, probs: Tensor, deltas: Tensor, anchors: Tensor, image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Fast NMS: the best class of each anchor, one suppression across classes."""
        opts = self.options
        scores, labels = probs.max(dim=1)
        idx = torch.nonzero(scores > opts.score_threshold).squeeze(1)
        # stable: equal scores (8-bit ones often are) stay in anchor order, as in TF Lite
        scores, order = scores[idx].sort(descending=True, stable=True)
        if opts.topk_candidates is not None:
            scores, order = scores[: opts.topk_candidates], order[: opts.topk_candidates]
        idx = idx[order]
        # TF Lite suppresses among the decoded boxes as they are, and only then are ours
        # clipped: a box reaching out of the image overlaps its neighbours by that much
        cand = self.box_coder.decode(deltas[idx], anchors[idx])
        keep = nms(cand, scores, opts.nms_iou)[: opts.max_detections]
        boxes = clip_boxes_to_image(cand[keep], image_size)
        return {"boxes": boxes, "scores": scores[keep], "labels": labels[idx][keep]}
