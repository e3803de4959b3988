"""Multibox loss on tiny hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch

from heads.box_coder import BoxCoder
from heads.detection_loss import MultiBoxLoss, MultiBoxLossOptions, encode_targets

ANCHORS = torch.tensor(
    [[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], dtype=torch.float32
)
NUM_CLASSES = 2


def _target(boxes, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def test_encode_targets_labels_are_shifted_by_background():
    cls, box = encode_targets([_target([[0, 0, 10, 10]], [1])], ANCHORS, BoxCoder())
    assert cls.tolist() == [[2, 0, 0, 0]]
    assert box[0, 0].tolist() == pytest.approx([0, 0, 0, 0])


def test_loss_by_hand_with_uniform_logits():
    logits = torch.zeros(1, 4, NUM_CLASSES + 1)
    deltas = torch.zeros(1, 4, 4)
    deltas[0, 0, 0] = 1.0  # smooth-L1(1) = 0.5 on the one positive
    out = MultiBoxLoss()(logits, deltas, ANCHORS, [_target([[0, 0, 10, 10]], [0])])
    # 1 positive + min(3 * 1, 3 available) negatives, each CE = log(3), divided by 1
    assert out["num_positives"].item() == 1
    assert out["loss_cls"].item() == pytest.approx(4 * math.log(3))
    assert out["loss_box"].item() == pytest.approx(0.5)
    assert out["loss"].item() == pytest.approx(4 * math.log(3) + 0.5)


def test_hard_negative_mining_picks_the_worst_negatives():
    logits = torch.zeros(1, 4, NUM_CLASSES + 1)
    # anchors 1..3 are negatives; anchor 2 is the most confidently wrong, then 3, then 1
    logits[0, 2, 1] = 5.0
    logits[0, 3, 1] = 2.0
    loss = MultiBoxLoss(options=MultiBoxLossOptions(neg_pos_ratio=1.0))
    out = loss(logits, torch.zeros(1, 4, 4), ANCHORS, [_target([[0, 0, 10, 10]], [0])])
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([1, 0, 0, 0]), reduction="none")
    assert out["loss_cls"].item() == pytest.approx((ce[0] + ce[2]).item())


def test_images_without_boxes_and_min_negatives():
    logits = torch.zeros(2, 4, NUM_CLASSES + 1)
    logits[1, 1, 2] = 3.0
    targets = [_target([[0, 0, 10, 10]], [1]), _target([], [])]
    ce_bg = torch.nn.functional.cross_entropy(
        logits[1], torch.zeros(4, dtype=torch.long), reduction="none"
    )
    plain = MultiBoxLoss()(logits, torch.zeros(2, 4, 4), ANCHORS, targets)
    # the empty image contributes nothing without min_negatives
    assert plain["loss_cls"].item() == pytest.approx(4 * math.log(3))
    tf_style = MultiBoxLoss(options=MultiBoxLossOptions(min_negatives=1))(
        logits, torch.zeros(2, 4, 4), ANCHORS, targets
    )
    assert tf_style["loss_cls"].item() == pytest.approx(4 * math.log(3) + ce_bg.max().item())


def test_no_positive_in_batch_is_finite_and_differentiable():
    logits = torch.randn(1, 4, NUM_CLASSES + 1, requires_grad=True)
    out = MultiBoxLoss(options=MultiBoxLossOptions(min_negatives=2))(
        logits, torch.zeros(1, 4, 4), ANCHORS, [_target([], [])]
    )
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and logits.grad is not None


def test_degenerate_box_is_reported():
    with pytest.raises(ValueError, match="positive size"):
        MultiBoxLoss()(
            torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), ANCHORS, [_target([[5, 5, 5, 9]], [0])]
        )
