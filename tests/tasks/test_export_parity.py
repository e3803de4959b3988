"""Parity of end-to-end detections: order-free matching, equal-score ties, real failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from tasks.export import export
from tasks.export.parity import ParityReport, compare_detections

# four anchors, one class; anchors 1, 2 and 3 share the score 0.5 (a tie)
BOXES = np.array([[[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]], "f4")
PROBS = np.array([[[0.9], [0.5], [0.5], [0.5]]], "f4")


def _torch_dets(anchors: list[int]) -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.from_numpy(BOXES[0, anchors]),
            "scores": torch.from_numpy(PROBS[0, anchors, 0]),
            "labels": torch.zeros(len(anchors), dtype=torch.int64),
        }
    ]


def _runtime(anchors: list[int], scores: list[float] | None = None) -> list[np.ndarray]:
    s = PROBS[0, anchors, 0] if scores is None else np.array(scores, "f4")
    n = len(anchors)
    return [BOXES[0, anchors], s, np.zeros(n, "i8"), np.zeros(n, "i8")]


def _compare(torch_anchors: list[int], runtime_out: list[np.ndarray]) -> ParityReport:
    report = ParityReport(Path("x.onnx"), 1)
    return compare_detections(report, _torch_dets(torch_anchors), runtime_out, PROBS, BOXES)


def test_any_order_passes_without_ties() -> None:
    report = _compare([0, 1], _runtime([1, 0]))
    assert report.passed and report.tie_swaps == 0
    assert report.max_abs_diff == {"boxes": 0.0, "scores": 0.0}


def test_a_different_choice_among_equal_scores_passes() -> None:
    # PyTorch kept anchor 1, the runtime anchor 3: both score 0.5, both real candidates.
    report = _compare([0, 1], _runtime([3, 0]))
    assert report.passed and report.tie_swaps == 1
    assert "1 equal-score ties kept differently" in str(report)


def test_a_box_that_is_no_candidate_fails() -> None:
    out = _runtime([0, 3])
    out[0][1] += 5.0  # the runtime's box of the tied score is not any anchor's box
    assert not _compare([0, 1], out).passed


def test_a_different_score_fails() -> None:
    assert not _compare([0, 1], _runtime([0, 1], scores=[0.9, 0.45])).passed
    assert not _compare([0, 1], _runtime([0])).passed  # a missing detection


def test_untrained_detector_with_tied_scores_exports(tmp_path: Path) -> None:
    """The README's example: an untrained 80-class SSDLite, whose scores all tie."""
    from heads.ssdlite import ssdlite_mobilenet_v2

    torch.manual_seed(0)
    model = ssdlite_mobilenet_v2(num_classes=80, width_mult=0.35, image_size=128)
    result = export(
        model, str(tmp_path), name="det", image_size=128, detector_form="end2end",
        num_check_images=2, printer=None,
    )  # fmt: skip
    (report,) = result.parity
    assert report.passed and report.detections is not None
    assert report.detections[0] == report.detections[1] > 0
