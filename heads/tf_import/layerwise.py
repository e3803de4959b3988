"""Layer by layer against the TF Lite runtime: each convolution of a converted model, fed
the runtime's own input to that layer, against the runtime's output of it.

An 8-bit file's runtime rounds every activation; on a deep model (and most of all on a
random one) those roundings add up until whole outputs differ, so an end-to-end comparison
cannot tell a wrong conversion from quantization noise. One layer at a time it can: the
runtime's output of a layer is its exact result rounded to the output's 8-bit grid (and
saturated at the grid's ends), so ours (dequantized weights, float arithmetic, the same
input, saturated the same way) must lie within about one step of that grid. A wrong weight, bias, channel order, padding, stride, dilation or activation
shows as many steps. Needs ``ai-edge-litert``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from heads.tf_import.names import ConvMapping, out_index_array


@dataclass
class LayerError:
    """One layer's difference from the runtime.

    Attributes:
        scope: its TF name (``FeatureExtractor/MobilenetV2/expanded_conv_3/expand``).
        max_difference: largest absolute difference of its outputs.
        step: the runtime's output grid step (its scale; 0 for a float tensor).
    """

    scope: str
    max_difference: float
    step: float

    @property
    def steps(self) -> float:
        """The difference in grid steps (``inf`` for a float output that differs)."""
        if self.step:
            return self.max_difference / self.step
        return 0.0 if self.max_difference == 0 else float("inf")


def match_convs(variables: dict[str, np.ndarray], convs: list[Any]) -> dict[str, Any]:
    """TF scope -> the file's conv operator holding the same weights."""
    out = {}
    for name, value in variables.items():
        if not name.endswith("weights"):
            continue
        scope = name.rsplit("/", 1)[0]
        for conv in convs:
            if conv.weights.shape == value.shape and np.array_equal(conv.weights, value):
                out[scope] = conv
                break
    return out


def _unit(model: nn.Module, mapping: ConvMapping) -> nn.Module:
    """Our modules of one TF conv layer: conv (+ BatchNorm) (+ its activation)."""
    parent_name, _, leaf = mapping.conv.rpartition(".")
    parent = model.get_submodule(parent_name)
    if isinstance(parent, nn.Sequential) and leaf == "0" and len(parent) == 3:
        return parent  # conv, BatchNorm, ReLU / ReLU6
    conv = model.get_submodule(mapping.conv)
    bn = nn.Identity() if mapping.bn is None else model.get_submodule(mapping.bn)
    return nn.Sequential(conv, bn)


def quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float ``x`` on the 8-bit grid of a runtime tensor ``detail`` (rounded, saturated)."""
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def debugging_interpreter(model_path: Path) -> Any:
    """A TF Lite interpreter of ``model_path`` (tensors allocated) that keeps every
    intermediate tensor readable after ``invoke``."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():  # "for debugging": reading every tensor is the point
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(
            model_path=str(model_path),
            num_threads=1,
            experimental_preserve_all_tensors=True,
            # a delegate (XNNPACK) reuses its tensors' memory: only the built-in kernels
            # keep every intermediate value
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    interpreter.allocate_tensors()
    return interpreter


def compare_layers(
    model_path: Path, model: nn.Module, mappings: list[ConvMapping], image: np.ndarray
) -> list[LayerError]:
    """Every mapped layer of ``model`` (converted from ``model_path``) on the runtime's
    own input to it, for one input ``image`` (float ``[H, W, 3]`` in the file's range).

    Returns:
        one ``LayerError`` per mapping, in mapping order.
    """
    from heads.tf_import.convert import read_variables
    from heads.tf_import.tflite import TFLiteFile

    variables = read_variables(model_path)[0]
    placed = match_convs(variables, TFLiteFile(model_path).convs())
    interpreter = debugging_interpreter(model_path)
    detail = interpreter.get_input_details()[0]
    fed = image[None].astype(np.float32)
    if detail["dtype"] != np.float32:
        fed = quantize(fed, detail)
    interpreter.set_tensor(detail["index"], fed)
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}

    def value(index: int) -> tuple[np.ndarray, float, tuple[float, float]]:
        """A tensor in float, its grid step and the range its grid spans."""
        x = interpreter.get_tensor(index)
        scale, zero_point = details[index]["quantization"]
        if x.dtype == np.float32 or not scale:
            return x.astype(np.float32), 0.0, (-np.inf, np.inf)
        info = np.iinfo(x.dtype)
        span = ((info.min - zero_point) * scale, (info.max - zero_point) * scale)
        return ((x.astype(np.float32) - zero_point) * scale).astype(np.float32), scale, span

    out = []
    for m in mappings:
        conv = placed.get(m.tf_scope)
        if conv is None:
            raise ValueError(f"{model_path}: no operator holds the weights of {m.tf_scope}")
        x = value(conv.source)[0]
        reference, step, (low, high) = value(conv.output)
        with torch.no_grad():
            ours = _unit(model, m)(torch.from_numpy(x).permute(0, 3, 1, 2))
        # the runtime saturates at its grid's ends (calibrated on other inputs than this one)
        ours_np = np.clip(ours.permute(0, 2, 3, 1).numpy(), low, high)
        index = out_index_array(m)
        if index is not None:
            reference = reference[..., index]
        out.append(LayerError(m.tf_scope, float(np.abs(ours_np - reference).max()), step))
    return out
