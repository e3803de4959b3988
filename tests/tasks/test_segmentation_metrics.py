"""Confusion-matrix mIoU against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from tasks.metrics.segmentation import SegmentationMetrics, confusion_matrix, iou_from_confusion

PREDS = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
TARGET = torch.tensor([[[0, 1, 2], [2, 255, 1]]])


def test_confusion_matrix_by_hand_with_ignored_pixel() -> None:
    cm = confusion_matrix(PREDS, TARGET, 3)
    # rows: ground truth, columns: prediction; the 255 pixel is not counted
    assert cm.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    iou = iou_from_confusion(cm)
    torch.testing.assert_close(iou, torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))


def test_metric_values_and_absent_class() -> None:
    metric = SegmentationMetrics(num_classes=4)
    metric.update(PREDS, TARGET, loss_sum=torch.tensor(2.5))
    out = metric.compute()
    assert out["confmat"].sum() == 5
    assert out["loss"].item() == pytest.approx(2.5 / 5)  # per labelled pixel of the set
    assert math.isnan(out["iou"][3])  # never in target nor prediction: left out of the mean
    assert out["miou"].item() == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert out["pixel_acc"].item() == pytest.approx(3 / 5)
    # scores [B, C, H, W] are arg-maxed
    metric.reset()
    metric.update(torch.nn.functional.one_hot(PREDS, 4).permute(0, 3, 1, 2).float(), TARGET)
    assert metric.compute()["confmat"].tolist()[:3] == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0]]


def test_dataset_level_not_mean_of_images() -> None:
    """Two images: a small one all wrong for class 1, a large one all right. The official
    mIoU reads one summed matrix, so the large image dominates."""
    small_t, small_p = torch.ones(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)
    big_t = torch.zeros(1, 8, 8, dtype=torch.long)
    big_t[:, :, 4:] = 1
    metric = SegmentationMetrics(num_classes=2)
    metric.update(small_p, small_t)
    metric.update(big_t.clone(), big_t)
    # class 0: tp 32, fp 4 -> 32/36; class 1: tp 32, fn 4 -> 32/36
    assert metric.compute()["miou"].item() == pytest.approx(32 / 36)
    reference = MulticlassJaccardIndex(2, ignore_index=255, average="macro")
    reference.update(small_p, small_t)
    reference.update(big_t.clone(), big_t)
    assert reference.compute().item() == pytest.approx(32 / 36)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="differ"):
        confusion_matrix(PREDS, TARGET[..., :2], 3)
    with pytest.raises(ValueError, match=r"target values must be in 0..2 or 255, got \[7\]"):
        confusion_matrix(PREDS, torch.full_like(TARGET, 7), 3)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SegmentationMetrics(1)
