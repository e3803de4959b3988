"""SSD multibox loss: smooth-L1 on matched anchors, softmax cross-entropy with hard
negative mining, both normalised by the number of matched anchors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads.box_coder import BoxCoder, match_anchors


def encode_targets(
    targets: Sequence[dict[str, Tensor]],
    anchors: Tensor,
    box_coder: BoxCoder,
    iou_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Match every image's boxes to the anchors and encode them.

    Args:
        targets: per image ``boxes`` ``[N, 4]`` (x1, y1, x2, y2, input pixels, positive
            size) and ``labels`` ``[N]`` int64 in ``0..num_classes-1``; ``N`` may be 0.
        anchors: ``[A, 4]`` anchors in input pixels.
        box_coder: the box coder.
        iou_threshold: IoU for a positive match.

    Returns:
        ``class_targets`` ``[B, A]`` int64 (0 = background, ``label + 1`` otherwise) and
        ``box_targets`` ``[B, A, 4]`` (codes; only meaningful where ``class_targets > 0``).
    """
    class_targets, box_targets = [], []
    for i, target in enumerate(targets):
        boxes = target["boxes"].to(anchors)
        labels = target["labels"].to(anchors.device)
        if boxes.numel() and bool(((boxes[:, 2:] - boxes[:, :2]) <= 0).any()):
            bad = boxes[((boxes[:, 2:] - boxes[:, :2]) <= 0).any(dim=1)][0].tolist()
            raise ValueError(f"image {i} of the batch has a box without positive size: {bad}")
        matches = match_anchors(boxes, anchors, iou_threshold)
        positive = matches >= 0
        safe = matches.clamp(min=0)
        if boxes.numel():
            cls = torch.where(positive, labels[safe] + 1, torch.zeros_like(matches))
            codes = box_coder.encode(boxes[safe], anchors)
        else:
            cls = torch.zeros_like(matches)
            codes = torch.zeros_like(anchors)
        class_targets.append(cls)
        box_targets.append(codes)
    return torch.stack(class_targets), torch.stack(box_targets)


@dataclass(frozen=True)
class MultiBoxLossOptions:
    """Matching and hard negative mining of the SSD loss: the ``loss`` argument of the
    detectors' builders, models and tasks (``model.init_args.loss.min_negatives`` in a
    config; ``MultiBoxLossOptions(min_negatives=3)`` from Python).

    Args:
        iou_threshold: IoU for a positive anchor (0.5).
        neg_pos_ratio: hard negatives per positive (3).
        min_negatives: hard negatives per image at least (0 = torchvision; TF uses 3).
        box_weight: weight of the localisation term (1).

    Raises:
        ValueError: a value out of range, named with the value given.
    """

    iou_threshold: float = 0.5
    neg_pos_ratio: float = 3.0
    min_negatives: int = 0
    box_weight: float = 1.0

    def __post_init__(self) -> None:
        # written as "not inside" so that NaN is refused too
        if not self.neg_pos_ratio > 0:
            raise ValueError(f"neg_pos_ratio must be > 0, got {self.neg_pos_ratio}")
        if self.min_negatives < 0:
            raise ValueError(f"min_negatives must be >= 0, got {self.min_negatives}")
        if not 0 < self.iou_threshold <= 1:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not self.box_weight >= 0:
            raise ValueError(f"box_weight must be >= 0, got {self.box_weight}")


class MultiBoxLoss(nn.Module):
    """The SSD training loss (Liu et al. 2016, eq. 1-3) as torchvision and MMDetection use it.

    ``loss = (box_weight * sum_pos smoothL1(box) + sum_{pos + hard neg} CE(class)) /
    max(1, num_pos)``. For each image the negatives with the highest background
    cross-entropy are kept, at most ``neg_pos_ratio`` per positive and at least
    ``min_negatives`` (TF's ``min_negatives_per_image``, so that images without objects
    still teach background).

    Args:
        box_coder: encodes matched boxes; default ``BoxCoder((10, 10, 5, 5))``.
        options: matching and mining (``MultiBoxLossOptions``).
    """

    def __init__(
        self,
        box_coder: BoxCoder | None = None,
        options: MultiBoxLossOptions = MultiBoxLossOptions(),
    ) -> None:
        super().__init__()
        self.box_coder = box_coder or BoxCoder()
        self.options = options

    def forward(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        anchors: Tensor,
        targets: Sequence[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """Compute the loss.

        Args:
            cls_logits: ``[B, A, C + 1]`` class logits, index 0 = background.
            box_deltas: ``[B, A, 4]`` predicted box codes.
            anchors: ``[A, 4]`` anchors (x1, y1, x2, y2) in input pixels.
            targets: ``B`` dicts with ``boxes`` ``[N, 4]`` and ``labels`` ``[N]``.

        Returns:
            ``loss`` (the sum to minimise), ``loss_box``, ``loss_cls`` (scalars) and
            ``num_positives`` (matched anchors in the batch).
        """
        if len(targets) != cls_logits.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {cls_logits.shape[0]}")
        with torch.no_grad():
            class_targets, box_targets = encode_targets(
                targets, anchors, self.box_coder, self.options.iou_threshold
            )
        positive = class_targets > 0  # [B, A]
        num_pos_per_image = positive.sum(dim=1)
        normalizer = num_pos_per_image.sum().clamp(min=1).to(cls_logits.dtype)

        loss_box = F.smooth_l1_loss(
            box_deltas[positive], box_targets[positive].to(box_deltas), beta=1.0, reduction="sum"
        )
        ce = F.cross_entropy(
            cls_logits.flatten(0, 1).float(), class_targets.flatten(), reduction="none"
        ).view_as(class_targets)
        negative = self._hard_negatives(ce.detach(), positive, num_pos_per_image)
        loss_cls = ce[positive | negative].sum()

        loss_box = self.options.box_weight * loss_box / normalizer
        loss_cls = loss_cls / normalizer
        return {
            "loss": loss_box + loss_cls,
            "loss_box": loss_box,
            "loss_cls": loss_cls,
            "num_positives": num_pos_per_image.sum(),
        }

    def _hard_negatives(self, ce: Tensor, positive: Tensor, num_pos: Tensor) -> Tensor:
        """``[B, A]`` bool: the highest-loss background anchors of each image."""
        opts = self.options
        num_neg = (opts.neg_pos_ratio * num_pos).long().clamp(min=opts.min_negatives)
        num_neg = torch.minimum(num_neg, (~positive).sum(dim=1))
        negative_loss = ce.masked_fill(positive, float("-inf"))
        order = negative_loss.argsort(dim=1, descending=True)
        rank = order.argsort(dim=1)
        return rank < num_neg.unsqueeze(1)
