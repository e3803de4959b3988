"""ONNX: trace a zoo graph into one self-contained file with a dynamic batch, and open it
in onnxruntime.

The TorchScript exporter (``dynamo=False``) is used on purpose: it exports torchvision's
``nms`` through its registered ONNX symbolic and writes one self-contained file, while the
dynamo exporter needs ``onnxscript``, fails inside ``batched_nms`` and stores weights in a
side file by default.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: output names of every exported form
OUTPUTS: dict[str, tuple[str, ...]] = {
    "classifier": ("logits",),
    "segmenter": ("logits",),
    "raw": ("cls_logits", "box_deltas", "anchors"),
    "end2end": ("boxes", "scores", "labels", "batch_index"),
}


def export_onnx(
    graph: nn.Module, form: str, path: Path, image_size: tuple[int, int], opset: int = 17
) -> Path:
    """Trace ``graph`` on a ``[2, 3, H, W]`` input and write ``path`` (one file, dynamic batch)."""
    outputs = OUTPUTS[form]
    dynamic: dict[str, dict[int, str]] = {"images": {0: "batch"}}
    for name in outputs:
        if name != "anchors":
            dynamic[name] = {0: "detections" if form == "end2end" else "batch"}
    example = torch.randn(2, 3, *image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation + tracer notes
        torch.onnx.export(
            graph.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return path


def ort_session(path: str | Path, threads: int | None = None, spinning: bool = True) -> Any:
    """A CPU onnxruntime session with all graph optimizations.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (default: onnxruntime's choice).
        spinning: let idle worker threads spin-wait for the next operator (onnxruntime's
            default, lowest latency for one session). Pass ``False`` when several sessions
            take turns on the same cores, as in a benchmark: each session has its own
            threads, and those spinning after a run take the cores from the next session.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
