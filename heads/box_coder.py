"""SSD box coding (centre/size offsets with scales 10, 10, 5, 5) and anchor matching."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

# torchvision's guard against exp() overflow when decoding: at most a 1000/16 size ratio.
_MAX_LOG_RATIO = math.log(1000.0 / 16)


def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


class BoxCoder:
    """Encode boxes as offsets from anchors and back (TF ``FasterRcnnBoxCoder``).

    ``t = (sx (x - xa) / wa, sy (y - ya) / ha, sw log(w / wa), sh log(h / ha))`` with
    ``(sx, sy, sw, sh) = scales``; ``(x, y, w, h)`` are centre and size. TF orders the code
    ``(ty, tx, th, tw)``; here it is ``(tx, ty, tw, th)``, like torchvision.

    Args:
        scales: the four scale factors (SSD: 10, 10, 5, 5).
    """

    def __init__(self, scales: Sequence[float] = (10.0, 10.0, 5.0, 5.0)) -> None:
        if len(scales) != 4 or min(scales) <= 0:
            raise ValueError(f"scales must be four positive numbers, got {tuple(scales)}")
        self.scales = tuple(float(s) for s in scales)

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """``boxes`` and ``anchors`` ``[..., 4]`` (x1, y1, x2, y2) -> codes ``[..., 4]``."""
        x, y, w, h = _centre_size(boxes)
        xa, ya, wa, ha = _centre_size(anchors)
        sx, sy, sw, sh = self.scales
        return torch.stack(
            [
                sx * (x - xa) / wa,
                sy * (y - ya) / ha,
                sw * torch.log(w / wa),
                sh * torch.log(h / ha),
            ],
            dim=-1,
        )

    def decode(self, codes: Tensor, anchors: Tensor) -> Tensor:
        """Codes ``[..., 4]`` and ``anchors`` ``[..., 4]`` -> boxes ``[..., 4]`` (x1, y1, x2, y2)."""
        xa, ya, wa, ha = _centre_size(anchors)
        sx, sy, sw, sh = self.scales
        x = codes[..., 0] / sx * wa + xa
        y = codes[..., 1] / sy * ha + ya
        w = torch.exp((codes[..., 2] / sw).clamp(max=_MAX_LOG_RATIO)) * wa
        h = torch.exp((codes[..., 3] / sh).clamp(max=_MAX_LOG_RATIO)) * ha
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=-1)


def match_anchors(
    gt_boxes: Tensor, anchors: Tensor, iou_threshold: float = 0.5, force_match: bool = True
) -> Tensor:
    """Assign each anchor to a ground-truth box or to background (SSD "argmax" matching).

    An anchor is matched to the box it overlaps most when that IoU is ``>= iou_threshold``.
    With ``force_match`` every box also claims the anchor it overlaps most, even below the
    threshold, so no object is left without a positive anchor (TF
    ``force_match_for_each_row``); when two boxes claim the same anchor the first one wins.

    Args:
        gt_boxes: ``[G, 4]`` boxes (x1, y1, x2, y2); ``G`` may be 0.
        anchors: ``[A, 4]`` anchors in the same coordinates.
        iou_threshold: IoU needed for a positive match.
        force_match: give every box its best anchor.

    Returns:
        ``[A]`` int64: index of the matched box, or -1 for background.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    iou = box_iou(gt_boxes, anchors)  # [G, A]
    best_iou, matches = iou.max(dim=0)
    matches = torch.where(best_iou >= iou_threshold, matches, torch.full_like(matches, -1))
    if force_match:
        best_anchor = iou.argmax(dim=1)  # [G]
        # When boxes claim the same anchor the first one wins, as in TF's argmax matcher;
        # scatter_reduce is deterministic where indexing with duplicates is not.
        num_gt = gt_boxes.shape[0]
        forced = torch.full_like(matches, num_gt).scatter_reduce(
            0, best_anchor, torch.arange(num_gt, device=anchors.device), reduce="amin"
        )
        matches = torch.where(forced < num_gt, forced, matches)
    return matches
