"""Semantic segmentation metrics from one confusion matrix over the whole evaluation set.

This is the official PASCAL VOC / Cityscapes definition: every labelled pixel of every
image adds one count to a ``[C, C]`` matrix; IoU_c = TP / (TP + FP + FN) is read off the
summed matrix at the end (not averaged per image). Pixels labelled ``ignore_index`` are
left out. Under DDP the matrices of all processes are summed once, when ``compute`` runs at
the end of the epoch, so no collective runs per step and processes may see different
numbers of batches.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def confusion_matrix(
    preds: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """``[C, C]`` int64 counts, rows = ground truth, columns = prediction.

    Args:
        preds: predicted labels, any shape, values in ``0..C-1``.
        target: ground-truth labels, same shape; ``ignore_index`` pixels are skipped.

    Raises:
        ValueError: shapes differ, or a label is neither a class nor ``ignore_index``.
    """
    if preds.shape != target.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
    valid = target != ignore_index
    target, preds = target[valid].long(), preds[valid].long()
    if target.numel() and (target.min() < 0 or target.max() >= num_classes):
        raise ValueError(
            f"target values must be in 0..{num_classes - 1} or {ignore_index}, got "
            f"{sorted(set(target.unique().tolist()))[:10]}"
        )
    if preds.numel() and (preds.min() < 0 or preds.max() >= num_classes):
        raise ValueError(f"predicted labels must be in 0..{num_classes - 1}")
    index = target * num_classes + preds
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confmat: Tensor) -> Tensor:
    """Per-class IoU ``[C]`` (float64); NaN for a class absent from both target and
    prediction (excluded from the mean, as in TF's ``mean_iou`` and MMSegmentation)."""
    confmat = confmat.double()
    tp = confmat.diagonal()
    union = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))


class SegmentationMetrics(Metric):
    """Accumulates a confusion matrix; ``compute`` returns mIoU, pixel accuracy, per-class IoU.

    Args:
        num_classes: C.
        ignore_index: label value that is not counted.

    ``update(preds, target, loss_sum=None)``: ``preds`` labels ``[B, H, W]`` or scores
    ``[B, C, H, W]`` (arg-maxed); ``target`` ``[B, H, W]``; ``loss_sum`` the summed pixel loss
    of the batch (optional), averaged over every labelled pixel of the set in ``compute``.

    ``compute()`` returns ``{"miou", "pixel_acc", "loss", "iou" ([C]), "confmat" ([C, C])}``;
    mIoU is the mean over classes present in target or prediction.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # int64 counts: Cityscapes val alone has 1e9 pixels, beyond float32's exact range.
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )
        self.add_state(
            "loss_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor, loss_sum: Tensor | None = None) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        # Out of place: a state tensor may live in memory shared between processes (CPU
        # ddp_spawn pickles the module to every process), where += would count twice.
        self.confmat = self.confmat + confusion_matrix(
            preds, target, self.num_classes, self.ignore_index
        )
        if loss_sum is not None:
            self.loss_sum = self.loss_sum + loss_sum.detach().double()

    def compute(self) -> dict[str, Tensor]:
        confmat = self.confmat
        iou = iou_from_confusion(confmat)
        total = confmat.sum()
        pixel_acc = confmat.diagonal().sum().double() / total.clamp(min=1)
        miou = iou.nanmean() if not torch.isnan(iou).all() else iou.new_tensor(0.0)
        loss = self.loss_sum / total.clamp(min=1)
        return {
            "miou": miou,
            "pixel_acc": pixel_acc,
            "loss": loss,
            "iou": iou,
            "confmat": confmat.clone(),
        }
