"""ONNX export of the joint detection + segmentation model, self-contained.

One graph, both outputs: ``images [B, 3, H, W]`` -> ``cls_logits [B, A, C + 1]``,
``box_deltas [B, A, 4]``, ``seg_logits [B, S, H, W]`` and the ``anchors [A, 4]`` of the
exported input size (a constant), so a runtime decodes boxes with ``SSDPostprocessor``'s
rule and arg-maxes the mask. ``tasks.export.export`` uses it for an ``SSDLiteDeepLabV3``
(ONNX, and OpenVINO converted from that ONNX file; fp32).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from heads.joint import SSDLiteDeepLabV3
from tasks.export.parity import ParityReport, Runner, onnxruntime_runner

JOINT_OUTPUTS = ("cls_logits", "box_deltas", "seg_logits", "anchors")


class JointRaw(nn.Module):
    """The joint model's raw outputs plus the anchors of a fixed input size."""

    def __init__(self, model: SSDLiteDeepLabV3, image_size: tuple[int, int]) -> None:
        super().__init__()
        if not isinstance(model, SSDLiteDeepLabV3):
            raise TypeError(f"expected an SSDLiteDeepLabV3, got {type(model).__name__}")
        self.model = model
        with torch.no_grad():
            anchors = model.anchors_for(image_size, model.feature_sizes(image_size))
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cls_logits, box_deltas, seg_logits = self.model.forward_raw(images)
        return cls_logits, box_deltas, seg_logits, self.anchors.clone()


def export_joint(
    model: SSDLiteDeepLabV3,
    path: str | Path,
    image_size: tuple[int, int] = (320, 320),
    opset: int = 17,
) -> Path:
    """Trace ``model`` (eval mode) on a ``[2, 3, H, W]`` input and write ``path``.

    Returns:
        the written file (one file; the batch dimension is dynamic).
    """
    path = Path(path)
    graph = JointRaw(model, image_size).eval()
    dynamic = {name: {0: "batch"} for name in ("images", *JOINT_OUTPUTS[:3])}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation + tracer notes
        torch.onnx.export(
            graph,
            (torch.randn(2, 3, *image_size),),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=list(JOINT_OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return path


def check_joint_parity(
    path: str | Path,
    model: SSDLiteDeepLabV3,
    images: Tensor,
    tolerance: float = 1e-4,
    runner: Runner | None = None,
    runtime: str = "onnxruntime",
) -> ParityReport:
    """A runtime against PyTorch on ``images`` (their size must be the exported one).

    Args:
        path: the exported file.
        model: the joint model that was exported.
        images: ``[N, 3, H, W]`` float images.
        tolerance: absolute and relative tolerance.
        runner: runs the file (default: onnxruntime on ``path``).
        runtime: the runtime's name, for the report.
    """
    path = Path(path)
    runner = runner or onnxruntime_runner(path)
    out = list(runner(images.numpy()))
    graph = JointRaw(model, tuple(images.shape[-2:])).eval()
    with torch.no_grad():
        torch_out = graph(images)
    report = ParityReport(path, images.shape[0], tolerance=tolerance, runtime=runtime)
    close = True
    for name, ours, theirs in zip(JOINT_OUTPUTS, torch_out, out, strict=True):
        ours, theirs = ours.numpy(), np.asarray(theirs)
        if ours.shape != theirs.shape:
            report.max_abs_diff[name], close = float("inf"), False
            continue
        report.max_abs_diff[name] = float(np.abs(ours - theirs).max(initial=0.0))
        close &= bool(np.allclose(theirs, ours, rtol=tolerance, atol=tolerance))
    report.passed = close
    return report
