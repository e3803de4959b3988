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

from heads.inference import DetectorEnd2End, RawGraph
from heads.outputs import ClassifierOutputs, DetectorOutputs, SegmenterOutputs

#: output names of graphs that do not name their own (a peer model in a benchmark), by
#: form; the zoo's graphs (``RawGraph``, ``DetectorEnd2End``) carry their ``output_names``
OUTPUTS: dict[str, tuple[str, ...]] = {
    "classifier": ClassifierOutputs._fields,
    "segmenter": SegmenterOutputs._fields,
    "raw": (*DetectorOutputs._fields, "anchors"),
}


def as_graph(graph: nn.Module, image_size: tuple[int, int]) -> nn.Module:
    """A zoo model as its ``RawGraph``; a graph (or a foreign module) as it is."""
    if isinstance(graph, RawGraph):
        return graph
    try:
        return RawGraph(graph, image_size)
    except TypeError:
        return graph


def output_names(graph: nn.Module, form: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The outputs of ``graph`` exported as ``form``: (every name, the names without a
    batch dimension)."""
    if isinstance(graph, RawGraph):
        return graph.output_names, graph.constant_names
    return OUTPUTS[form], tuple(n for n in OUTPUTS[form] if n == "anchors")


def export_onnx(
    graph: nn.Module, form: str, path: Path, image_size: tuple[int, int], opset: int = 17
) -> Path:
    """Trace ``graph`` on a ``[2, 3, H, W]`` input and write ``path`` (one file, dynamic batch).

    Args:
        graph: a ``RawGraph`` or ``DetectorEnd2End`` (their outputs named by the model), a
            zoo model (exported as its ``RawGraph``), or another module whose outputs are
            those of ``OUTPUTS[form]``.
        form: the file's form (``"raw"`` / ``"end2end"`` for a detector, else the kind).
        path: the ``.onnx`` file to write.
        image_size: ``(H, W)`` of the traced input.
        opset: ONNX opset.
    """
    graph = as_graph(graph, image_size)
    outputs, constants = output_names(graph, form)
    batch_axis = "detections" if isinstance(graph, DetectorEnd2End) else "batch"
    dynamic: dict[str, dict[int, str]] = {"images": {0: "batch"}}
    dynamic.update({name: {0: batch_axis} for name in outputs if name not in constants})
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
