"""From raw SSD outputs to detections: softmax, score threshold, per-class top-k,
class-wise NMS and a cap on detections per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from heads.box_coder import BoxCoder


class SSDPostprocessor:
    """Turn ``[B, A, C + 1]`` logits and ``[B, A, 4]`` codes into per-image detections.

    Args:
        box_coder: decodes the codes against the anchors.
        score_threshold: drop candidates whose class probability is not above this.
        topk_per_class: keep at most this many candidates per class before NMS.
        nms_iou: IoU threshold of the class-wise non-maximum suppression.
        max_detections: detections kept per image, highest scores first.
    """

    def __init__(
        self,
        box_coder: BoxCoder | None = None,
        score_threshold: float = 0.001,
        topk_per_class: int = 300,
        nms_iou: float = 0.55,
        max_detections: int = 100,
    ) -> None:
        if not 0 <= score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        if not 0 < nms_iou <= 1:
            raise ValueError(f"nms_iou must be in (0, 1], got {nms_iou}")
        if topk_per_class < 1 or max_detections < 1:
            raise ValueError(
                f"topk_per_class and max_detections must be >= 1, got {topk_per_class} and "
                f"{max_detections}"
            )
        self.box_coder = box_coder or BoxCoder()
        self.score_threshold = score_threshold
        self.topk_per_class = topk_per_class
        self.nms_iou = nms_iou
        self.max_detections = max_detections

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
        probs = torch.softmax(cls_logits.float(), dim=-1)[..., 1:]  # [B, A, C]
        boxes = clip_boxes_to_image(
            self.box_coder.decode(box_deltas.float(), anchors.float()),
            (int(image_size[0]), int(image_size[1])),
        )
        return [self._single(p, b) for p, b in zip(probs, boxes, strict=True)]

    def _single(self, probs: Tensor, boxes: Tensor) -> dict[str, Tensor]:
        num_anchors, num_classes = probs.shape
        k = min(self.topk_per_class, num_anchors)
        scores, anchor_idx = probs.topk(k, dim=0)  # [k, C], per class
        labels = torch.arange(num_classes, device=probs.device).expand(k, num_classes)
        scores, anchor_idx, labels = scores.flatten(), anchor_idx.flatten(), labels.flatten()
        keep = scores > self.score_threshold
        scores, anchor_idx, labels = scores[keep], anchor_idx[keep], labels[keep]
        cand = boxes[anchor_idx]
        keep = batched_nms(cand, scores, labels, self.nms_iou)[: self.max_detections]
        return {"boxes": cand[keep], "scores": scores[keep], "labels": labels[keep]}
