"""Post-processing: threshold, class-wise NMS, top-k and the detection cap."""

from __future__ import annotations

import pytest
import torch

from heads.box_coder import BoxCoder
from heads.postprocess import SSDPostprocessor

# three anchors: 0 and 1 overlap heavily (IoU 0.82), 2 is far away
ANCHORS = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=torch.float32)


def _logits(probs: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is ``probs`` (rows: anchors, columns: background + classes)."""
    return torch.tensor(probs).log().unsqueeze(0)


def test_nms_is_class_wise_and_labels_are_zero_based():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.0001, 0.8], [0.3, 0.7, 0.0001]])
    out = SSDPostprocessor(score_threshold=0.5)(logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100))[
        0
    ]
    # anchors 0 and 1 overlap but have different classes: both stay
    assert out["labels"].tolist() == [0, 1, 0]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7], abs=1e-4)
    torch.testing.assert_close(out["boxes"], ANCHORS[[0, 1, 2]])


def test_nms_removes_same_class_overlap_and_threshold_drops():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.8, 0.0001], [0.7, 0.3, 0.0001]])
    out = SSDPostprocessor(score_threshold=0.35)(logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100))[
        0
    ]
    assert out["labels"].tolist() == [0]
    assert out["scores"].tolist() == pytest.approx([0.9], abs=1e-4)


def test_caps_and_clipping():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.0001, 0.8], [0.3, 0.7, 0.0001]])
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 2, 0] = 10.0  # shift the far anchor right by its width: clipped at x = 64
    out = SSDPostprocessor(score_threshold=0.5, max_detections=2)(
        logits, deltas, ANCHORS, (64, 64)
    )[0]
    assert len(out["scores"]) == 2
    assert float(out["boxes"].max()) <= 64
    topk = SSDPostprocessor(score_threshold=0.0, topk_per_class=1)(
        logits, deltas, ANCHORS, (64, 64)
    )[0]
    assert sorted(topk["labels"].tolist()) == [0, 1]


def test_decoding_uses_the_box_coder():
    logits = _logits([[0.1, 0.9, 0.0001]] + [[0.99, 0.005, 0.005]] * 2)
    deltas = BoxCoder().encode(torch.tensor([[2.0, 2.0, 8.0, 9.0]]), ANCHORS[:1])
    deltas = torch.cat([deltas, torch.zeros(2, 4)]).unsqueeze(0)
    out = SSDPostprocessor(score_threshold=0.5)(logits, deltas, ANCHORS, (100, 100))[0]
    assert out["boxes"][0].tolist() == pytest.approx([2, 2, 8, 9], abs=1e-4)


def test_empty_result_has_the_right_shapes():
    logits = _logits([[0.99, 0.005, 0.005]] * 3)
    out = SSDPostprocessor(score_threshold=0.5)(logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100))[
        0
    ]
    assert (
        out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="nms_iou"):
        SSDPostprocessor(nms_iou=0)
