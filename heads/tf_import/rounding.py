"""Where an 8-bit detection or DeepLab file rounds its activations, paired with our modules
by the graph's structure.

An 8-bit TF Lite graph rounds each operator's output to that tensor's own grid
``(scale, zero_point)``. Which of our modules computes the same value is found from the
graph, not from operator positions:

- a convolution holds the same weights as one of our layers (``layerwise.match_convs``
  through the builder's ``ConvMapping``\\ s): its output is our layer's output (after its
  BatchNorm and activation); the first convolution's input is the network's input;
- a residual ``ADD`` reads a convolution's output: it is the ``InvertedResidual`` holding
  that layer;
- ``MEAN`` / ``AVERAGE_POOL_2D`` feeds a convolution: it is the global pool beside that
  layer (DeepLab's image pooling);
- ``RESHAPE`` / ``SQUEEZE`` / ``QUANTIZE`` and a ``RESIZE_*`` that only broadcasts (a 1x1
  input) or keeps the size change no value: their roundings join their input's module;
- a ``CONCATENATION`` (which requantizes its inputs to its own grid) feeds a convolution:
  it is that layer's input (DeepLab's projection); it feeds the post-processing op: it is
  SSDLite's head output (box codes or class logits);
- a resize that interpolates and reaches the graph's output is our model's final
  upsampling (DeepLab);
- ``LOGISTIC`` / ``SOFTMAX`` is the detector's score conversion (outside our network, in
  the post-processor).

What pairs with none of these is listed in ``RoundingPlan.unpaired`` and not emulated.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from backbones.layers import InvertedResidual
from heads.tf_import.names import ConvMapping, out_index_array

if TYPE_CHECKING:
    from heads.tf_import.tflite import TFLiteFile, TFLiteTensor

Quantization = tuple[float, int, int, int]


@dataclass(frozen=True)
class Grid:
    """One rounding of the runtime (its built-in kernels).

    Attributes:
        q: the output tensor's ``(scale, zero_point, qmin, qmax)``.
        shifts: a convolution's per-output-channel right shifts (``[C]``, our channel
            order) or ``None``. The kernel rescales its integer sum by a 31-bit fixed-point
            multiplier and then divides by ``2**shift``, rounding at both: the value is
            first rounded to ``2**-shift`` of a step, then to a step.
        tie_to_even: ``QUANTIZE`` of a float input (``emulate._quantize_op``); fixed-point
            rescaling (everything else, ``QUANTIZE`` of an 8-bit input included) rounds
            halves away from zero, convolutions up.
        offset: ``MEAN`` rescales the input's zero point with the sum (in steps: this
            offset, added before rounding) and takes it off truncated (``int(offset)``
            after, rounded): its output is not the exact mean's rounding.
        raw: ``RESIZE_BILINEAR`` interpolates the stored integers (zero point included)
            and rounds those: halves go away from zero of the stored value.
        tensor: the file's tensor (for reports and tests).
    """

    q: Quantization
    shifts: tuple[int, ...] | None = None
    tie_to_even: bool = False
    tensor: int = -1
    offset: float = 0.0
    raw: bool = False


#: a rounding point: (our module's name, which element of its output: ``None`` for a
#: tensor, ``k`` for the k-th of a tuple; ``"input"`` to round the module's input)
Point = tuple[str, int | str | None]
#: operators that only move or re-encode values: a rounding joins their input's module
_KEEP = ("RESHAPE", "SQUEEZE", "QUANTIZE", "PAD", "EXPAND_DIMS")
_RESIZE = ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
_POOLS = ("MEAN", "AVERAGE_POOL_2D")
_SCORES = ("LOGISTIC", "SOFTMAX")
#: operators whose outputs are not activations of the network (classes, detections, float)
_ENDS = ("ARG_MAX", "CUSTOM", "DEQUANTIZE")
_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")


@dataclass
class RoundingPlan:
    """The roundings of one 8-bit file, on our modules.

    Attributes:
        points: ``(module name, element)`` -> the grids its value is rounded to, in order
            (module name ``""``: the model's own output).
        scores: the grid of the detector's score conversion, or ``None``.
        paired: how many of the file's rounding operators were paired.
        unpaired: the operators (``"12 RESIZE_BILINEAR"``) that were not.
    """

    points: dict[Point, list[Grid]] = field(default_factory=dict)
    scores: Quantization | None = None
    paired: int = 0
    unpaired: list[str] = field(default_factory=list)


def output_module(model: nn.Module, mapping: ConvMapping) -> str:
    """Name of our module whose output is the TF layer's output: the ``Conv -> BN ->
    activation`` block, else the BatchNorm, else the conv itself (``layerwise._unit``)."""
    parent_name, _, leaf = mapping.conv.rpartition(".")
    parent = model.get_submodule(parent_name)
    if isinstance(parent, nn.Sequential) and leaf == "0" and len(parent) == 3:
        return parent_name
    return mapping.bn or mapping.conv


def _enclosing(model: nn.Module, name: str, kind: type[nn.Module]) -> str | None:
    """The innermost module of type ``kind`` whose name is a prefix of ``name``."""
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if isinstance(model.get_submodule(candidate), kind):
            return candidate
    return None


def _pool_beside(model: nn.Module, name: str) -> str | None:
    """The global average pool in the module holding ``name`` (DeepLab's ImagePooling)."""
    parent = name.rpartition(".")[0]
    for child, module in model.get_submodule(parent).named_children():
        if isinstance(module, nn.AdaptiveAvgPool2d):
            return f"{parent}.{child}"
    return None


def rounding_plan(path: Path, model: nn.Module, builder: str) -> RoundingPlan:
    """Pair the 8-bit file ``path``'s rounding operators with ``model``'s modules
    (``model``: its conversion for ``builder``)."""
    from heads.tf_import.convert import file_classes, mappings_for, read_variables
    from heads.tf_import.layerwise import match_convs
    from heads.tf_import.tflite import TFLiteFile

    variables, layout, _ = read_variables(path)
    tfl = TFLiteFile(path)
    mappings = mappings_for(builder, model, file_classes(variables, layout))
    placed = match_convs(variables, tfl.convs())
    by_op = {placed[m.tf_scope].index: m for m in mappings if m.tf_scope in placed}
    names = tfl.op_names()
    consumers: dict[int, list[int]] = defaultdict(list)
    producer: dict[int, int] = {}
    for i in range(len(names)):
        ins, outs = tfl.op_tensors(i)
        for t in ins:
            consumers[t].append(i)
        producer.update(dict.fromkeys(outs, i))
    outputs = set(tfl._graph.OutputsAsNumpy().tolist())
    graph_inputs = set(tfl._graph.InputsAsNumpy().tolist())

    plan = RoundingPlan()
    owner: dict[int, Point] = {}  # tensor -> the point whose value it is

    def add(point: Point, grid: Grid) -> None:
        grids = plan.points.setdefault(point, [])
        if not grids or grids[-1].q != grid.q:
            grids.append(grid)

    def conv_reading(tensor: int) -> int | None:
        """The paired convolution that reads ``tensor`` (first one)."""
        return next((c for c in consumers[tensor] if c in by_op), None)

    def reaches_output(tensor: int) -> bool:
        """``tensor`` is the graph's output, or becomes it through ``_ENDS`` / ``_KEEP``."""
        while tensor not in outputs:
            after = consumers[tensor]
            if len(after) != 1 or names[after[0]] not in _ENDS + _KEEP:
                return False
            tensor = tfl.op_tensors(after[0])[1][0]
        return True

    first = min(by_op, default=None)
    for op in range(len(names)):
        name = names[op]
        inputs, outs = tfl.op_tensors(op)
        if not outs:
            continue
        q = tfl.tensor_quantization(outs[0])
        point: Point | None = None
        if op in by_op:
            if op == first and (qin := tfl.tensor_quantization(inputs[0])) is not None:
                add((by_op[op].conv, "input"), Grid(qin, tie_to_even=True, tensor=inputs[0]))
            point = (output_module(model, by_op[op]), None)
            if q is not None:
                add(point, Grid(q, _shifts(tfl, op, by_op[op]), tensor=outs[0]))
                owner[outs[0]] = point
                plan.paired += 1
                continue
        elif q is None or name in _ENDS:
            continue
        elif name == "ADD":
            # the residual branch's projection is the input computed last
            last = max(
                (t for t in inputs if producer.get(t) in by_op), key=producer.get, default=None
            )
            block = None if last is None else _enclosing(model, owner[last][0], InvertedResidual)
            point = None if block is None else (block, None)
        elif name in _POOLS:
            reader = conv_reading(outs[0])
            pool = (
                None if reader is None else _pool_beside(model, output_module(model, by_op[reader]))
            )
            point = None if pool is None else (pool, None)
            if point is not None and name == "MEAN" and q is not None:
                add(point, _mean_grid(tfl, inputs[0], outs[0], q))
                owner[outs[0]] = point
                plan.paired += 1
                continue
        elif name == "QUANTIZE" and inputs[0] in graph_inputs and first is not None:
            point = (by_op[first].conv, "input")  # the float input made 8-bit
        elif name in _KEEP or (name in _RESIZE and _keeps_values(tfl, inputs[0], outs[0])):
            point = owner.get(inputs[0])
        elif name in _RESIZE and reaches_output(outs[0]) and q is not None:
            add(("", None), Grid(q, tensor=outs[0], raw=True))
            owner[outs[0]] = ("", None)
            plan.paired += 1
            continue
        elif name == "CONCATENATION":
            point = _concat_point(model, tfl, op, outs[0], by_op, consumers, conv_reading)
        elif name in _SCORES and plan.scores is None:
            plan.scores = q
            plan.paired += 1
            continue
        if point is None or q is None:
            if q is not None:
                plan.unpaired.append(f"{op} {name}")
            continue
        if name == "QUANTIZE" and (q_in := tfl.tensor_quantization(inputs[0])) is not None:
            add(point, _requantize_grid(q_in, q, outs[0]))
        else:
            add(point, Grid(q, tie_to_even=name == "QUANTIZE", tensor=outs[0]))
        owner[outs[0]] = point
        plan.paired += 1
    return plan


def exact_weights(model: nn.Module, path: Path, builder: str) -> None:
    """Put the 8-bit file's weights and biases into ``model`` (its conversion, float64)
    exactly: ``scale * (q - zero_point)`` in float64, and folded BatchNorms exactly the
    identity. The float32 conversion rounds them by ~1e-7 of their value, enough to move
    a sum across one of the runtime's fine rounding points now and then."""
    from heads.tf_import.convert import file_classes, mappings_for, read_variables
    from heads.tf_import.layerwise import match_convs
    from heads.tf_import.tflite import TFLiteFile

    variables, layout, _ = read_variables(path)
    tfl = TFLiteFile(path)
    placed = match_convs(variables, tfl.convs())
    for m in mappings_for(builder, model, file_classes(variables, layout)):
        if m.tf_scope not in placed:
            continue
        inputs = tfl.op_tensors(placed[m.tf_scope].index)[0]
        conv = model.get_submodule(m.conv)
        index = out_index_array(m)
        weights = tfl.tensor(inputs[1])
        bias = tfl.tensor(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
        q_in = tfl.tensor_quantization(inputs[0])
        # the kernel adds the int32 bias to its sum of input x weight steps: its step is
        # input scale x weight scale, of which the file stores the float32 rounding
        bias_scale = (
            None
            if bias is None or q_in is None or weights is None or weights.scale is None
            else q_in[0] * np.asarray(weights.scale, dtype=np.float64)
        )
        with torch.no_grad():
            _snap(conv.weight, weights, index)
            if m.bn is None:
                if conv.bias is not None:
                    _snap(conv.bias, bias, index, bias_scale)
                continue
            bn = model.get_submodule(m.bn)
            if bool((bn.running_mean == 0).all()) and bool((bn.weight == 1).all()):
                bn.running_var.fill_(1.0 - bn.eps)  # folded: the identity plus the bias
                _snap(bn.bias, bias, index, bias_scale)


def _snap(
    values: torch.Tensor,
    tensor: TFLiteTensor | None,
    index: np.ndarray | None,
    step: np.ndarray | None = None,
) -> None:
    """``values`` (ours, output channels first) onto the integer grid of the file's
    ``tensor`` (its scale per output channel, or one), in place; the integers are placed
    at ``step`` where given (a bias: the exact step the kernel adds it at)."""
    if tensor is None or tensor.scale is None:
        return
    count = np.size(tensor.scale)

    def per_channel(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.broadcast_to(np.asarray(a, dtype=np.float64), (count,)).copy())
        if count > 1 and index is not None:
            t = t[torch.from_numpy(index)]
        return t.reshape(-1, *[1] * (values.dim() - 1)).to(values.dtype)

    scale = per_channel(tensor.scale)
    values.copy_(torch.round(values / scale) * (scale if step is None else per_channel(step)))


def _shifts(tfl: TFLiteFile, op: int, mapping: ConvMapping) -> tuple[int, ...] | None:
    """Per output channel (our order), the right shift of the runtime's rescaling of a
    convolution: ``-e`` of ``input_scale * weight_scale / output_scale = m * 2**e``,
    ``m`` in [0.5, 1)."""
    inputs, outputs = tfl.op_tensors(op)
    q_in, q_out = tfl.tensor_quantization(inputs[0]), tfl.tensor_quantization(outputs[0])
    weights = tfl.tensor(inputs[1])
    if q_in is None or q_out is None or weights is None or weights.scale is None:
        return None
    channels = weights.shape[0] if weights.quantized_dimension == 0 else weights.shape[-1]
    scale = np.broadcast_to(np.asarray(weights.scale, dtype=np.float64), (channels,))
    shifts = -np.frexp(q_in[0] * scale / q_out[0])[1]
    index = out_index_array(mapping)
    return tuple(int(k) for k in (shifts if index is None else shifts[index]))


def _requantize_grid(q_in: Quantization, q: Quantization, output: int) -> Grid:
    """``QUANTIZE`` of an 8-bit tensor to another grid: fixed-point rescaling by
    ``s_in / s_out``, rounded at its shift and then to a step (as a convolution's)."""
    shift = -int(np.frexp(q_in[0] / q[0])[1])
    return Grid(q, shifts=(shift,), tensor=output)


def _mean_grid(tfl: TFLiteFile, source: int, output: int, q: Quantization) -> Grid:
    """The built-in int8 ``MEAN`` over ``H, W``: ``sum(q_in) * s_in / (N * s_out)``
    rounded (fixed-point, its shift), plus ``z_out - int(z_in * s_in / s_out)``."""
    q_in = tfl.tensor_quantization(source)
    if q_in is None:
        return Grid(q, tensor=output)
    _, height, width, _ = tfl.tensor_shape(source)
    shift = -int(np.frexp(q_in[0] / (height * width * q[0]))[1])
    return Grid(q, (shift,), tensor=output, offset=q_in[1] * q_in[0] / q[0])


def _keeps_values(tfl: TFLiteFile, source: int, output: int) -> bool:
    """A resize that changes no value: from 1x1 (a broadcast) or to the same size."""
    before, after = tfl.tensor_shape(source), tfl.tensor_shape(output)
    return before[1:3] == (1, 1) or before[1:3] == after[1:3]


def _concat_point(model, tfl, op, output, by_op, consumers, conv_reading) -> Point | None:  # type: ignore[no-untyped-def]
    """A concatenation read by a convolution rounds that layer's input; one read (through
    re-encoding and the score op) by the post-processing op rounds SSDLite's head output:
    element 1 (box codes) for the op's first input, 0 (class logits) for its second."""
    reader = conv_reading(output)
    if reader is not None:
        return (by_op[reader].conv, "input")
    names = tfl.op_names()
    tensor = output
    while len(consumers[tensor]) == 1:
        after = consumers[tensor][0]
        if tfl.custom_code(after) is not None:
            position = tfl.op_tensors(after)[0].index(tensor)
            return ("head", 1 - position) if position in (0, 1) else None
        if names[after] not in _KEEP + _SCORES + ("DEQUANTIZE",):
            return None
        tensor = tfl.op_tensors(after)[1][0]
    return None
