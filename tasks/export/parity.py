"""Parity: run an exported file (onnxruntime or OpenVINO) and PyTorch on the same images and
compare their outputs.

Dense outputs (logits, box codes) are compared element-wise. End-to-end detections are
matched one to one (same label, score and box within tolerance), in any order. Detections
left unmatched are accepted only as *tie swaps*: where several candidates share a score,
PyTorch and the runtime may keep different ones of them at the per-image cap or in NMS
(e.g. an untrained model, whose 80 class scores are all equal). A swap passes only if the
runtime's detection is itself a candidate of the PyTorch model (a real anchor with that
label, score and box) and its score equals, within tolerance, the score of the PyTorch
detection it replaces; the scores of the two detection lists still agree one for one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tasks.export.onnx import as_graph, ort_session, output_names

TOLERANCE = 1e-4

#: numpy images [B, 3, H, W] -> the file's outputs, in the graph's output order
Runner = Callable[[np.ndarray], Sequence[np.ndarray]]


@dataclass
class ParityReport:
    """A runtime against PyTorch on the same images.

    Attributes:
        file: the exported file checked.
        images: number of images compared.
        max_abs_diff: largest absolute difference per output (detector: after matching).
        detections: detector end-to-end only: (PyTorch, runtime) detection counts.
        tie_swaps: detector end-to-end only: detections that differ between PyTorch and the
            runtime only by which of equally scored candidates was kept.
        runtime: ``"onnxruntime"`` or ``"openvino"``.
        passed: every output within ``tolerance`` absolute plus ``tolerance`` relative
            (detections: same count, each matched or a tie swap, scores within
            ``tolerance``, boxes within ``tolerance`` times the largest coordinate).
    """

    file: Path
    images: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    detections: tuple[int, int] | None = None
    tie_swaps: int = 0
    tolerance: float = TOLERANCE
    runtime: str = "onnxruntime"
    passed: bool = True

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        extra = ""
        if self.detections is not None:
            extra = f"; detections torch {self.detections[0]} / {self.runtime} {self.detections[1]}"
            if self.tie_swaps:
                extra += f" ({self.tie_swaps} equal-score ties kept differently)"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"[{verdict}] {self.file.name}: {self.images} images, max |{self.runtime} - torch|: "
            f"{diffs} (tolerance {self.tolerance:g}){extra}"
        )


def onnxruntime_runner(path: Path) -> Runner:
    """A ``Runner`` of an ONNX file in onnxruntime."""
    session = ort_session(path)
    return lambda images: session.run(None, {"images": images})


def check_parity(
    path: Path,
    graph: nn.Module,
    form: str,
    images: Tensor,
    tolerance: float = TOLERANCE,
    runner: Runner | None = None,
    runtime: str = "onnxruntime",
) -> ParityReport:
    """Run ``images`` through ``graph`` (PyTorch) and the exported ``path`` and compare,
    output by output (by name), for every model kind; an end-to-end detector's detections
    are matched one to one.

    Args:
        path: the exported file.
        graph: the module that was exported (a ``RawGraph`` of any kind, or
            ``DetectorEnd2End`` for ``form="end2end"``; a zoo model stands for its
            ``RawGraph``).
        form: the file's form (see ``tasks.export.onnx.export_onnx``).
        images: ``[N, 3, H, W]`` float images.
        tolerance: absolute and relative tolerance.
        runner: runs the file (default: onnxruntime on ``path``).
        runtime: the runtime's name, for the report.
    """
    graph = as_graph(graph, tuple(images.shape[-2:]))
    run = runner or onnxruntime_runner(path)
    out = list(run(images.numpy()))
    report = ParityReport(path, images.shape[0], tolerance=tolerance, runtime=runtime)
    with torch.no_grad():
        if form == "end2end":
            expected = graph.model(images)  # the model's own per-image post-processing
            probs, boxes = graph.candidates(images)
            return compare_detections(report, expected, out, probs.numpy(), boxes.numpy())
        torch_out = graph(images)
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    close = True
    for name, ours, theirs in zip(output_names(graph, form)[0], torch_out, out, strict=True):
        ours, theirs = ours.numpy(), np.asarray(theirs)
        if ours.shape != theirs.shape:
            report.max_abs_diff[name], close = float("inf"), False
            continue
        report.max_abs_diff[name] = float(np.abs(ours - theirs).max(initial=0.0))
        # torch.allclose's rule with atol = rtol = tolerance (large logits differ in ulps)
        close &= bool(np.allclose(theirs, ours, rtol=tolerance, atol=tolerance))
    report.passed = close
    return report


def compare_detections(
    report: ParityReport,
    expected: list[dict[str, Tensor]],
    runtime_out: Sequence[np.ndarray],
    probs: np.ndarray,
    boxes: np.ndarray,
) -> ParityReport:
    """Fill ``report`` from PyTorch's per-image detections and the runtime's flat ones.

    Args:
        report: the report to fill.
        expected: PyTorch's detections, one dict per image.
        runtime_out: ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``, ``batch_index [D]``.
        probs: ``[B, A, K]`` class probabilities of every anchor (PyTorch).
        boxes: ``[B, A, 4]`` decoded, clipped boxes of every anchor (PyTorch).
    """
    r_boxes, r_scores, r_labels, r_index = (np.asarray(a) for a in runtime_out[:4])
    n_torch = sum(len(d["scores"]) for d in expected)
    report.detections = (n_torch, len(r_scores))
    # Box coordinates are pixels (hundreds): compare them relative to the image size.
    scale = max([1.0] + [float(d["boxes"].abs().max()) for d in expected if len(d["boxes"])])
    tol, box_tol = report.tolerance, report.tolerance * scale
    same = n_torch == len(r_scores)
    box_diff = score_diff = 0.0
    for i, det in enumerate(expected):
        sel = r_index == i
        if not same or int(sel.sum()) != len(det["scores"]):
            same = False
            break
        t_boxes, t_scores = det["boxes"].numpy(), det["scores"].numpy()
        t_labels = det["labels"].numpy()
        o_boxes, o_scores, o_labels = r_boxes[sel], r_scores[sel], r_labels[sel]
        pairs, left_t, left_o = _match(
            (t_boxes, t_scores, t_labels), (o_boxes, o_scores, o_labels), tol, box_tol
        )
        for a, b in pairs:
            box_diff = max(box_diff, float(np.abs(t_boxes[a] - o_boxes[b]).max()))
            score_diff = max(score_diff, float(abs(t_scores[a] - o_scores[b])))
        # Unmatched ones must be equal-score ties, the runtime's being real candidates.
        ts, os_ = np.sort(t_scores[left_t]), np.sort(o_scores[left_o])
        if len(ts):
            score_diff = max(score_diff, float(np.abs(ts - os_).max()))
        is_candidate = all(
            _is_candidate(probs[i], boxes[i], o_labels[j], o_scores[j], o_boxes[j], tol, box_tol)
            for j in left_o
        )
        report.tie_swaps += len(left_t)
        same &= is_candidate
    report.max_abs_diff = {"boxes": box_diff, "scores": score_diff}
    report.passed = same and score_diff <= tol and box_diff <= box_tol
    return report


Detections = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes, scores, labels


def _match(
    ours: Detections, theirs: Detections, tol: float, box_tol: float
) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Greedy one-to-one matching, highest PyTorch score first: (pairs, unmatched PyTorch
    indices, unmatched runtime indices)."""
    (tb, ts, tl), (ob, os_, ol) = ours, theirs
    compatible = (
        (tl[:, None] == ol[None, :])
        & (np.abs(ts[:, None] - os_[None, :]) <= tol)
        & (np.abs(tb[:, None, :] - ob[None, :, :]).max(axis=-1, initial=0.0) <= box_tol)
    )
    used = np.zeros(len(os_), dtype=bool)
    pairs, left = [], []
    for a in np.argsort(-ts, kind="stable"):
        free = np.flatnonzero(compatible[a] & ~used)
        if len(free):
            used[free[0]] = True
            pairs.append((int(a), int(free[0])))
        else:
            left.append(int(a))
    return pairs, left, [int(j) for j in np.flatnonzero(~used)]


def _is_candidate(
    probs: np.ndarray,
    boxes: np.ndarray,
    label: int,
    score: float,
    box: np.ndarray,
    tol: float,
    box_tol: float,
) -> bool:
    """Whether some anchor has class ``label`` at ``score`` and the box ``box`` (PyTorch)."""
    hit = (np.abs(probs[:, int(label)] - score) <= tol) & (
        np.abs(boxes - box[None]).max(axis=1) <= box_tol
    )
    return bool(hit.any())
