"""Our converted MobileNetV2 with an 8-bit TF Lite file's activation rounding.

Converting an 8-bit file dequantizes its weights and biases exactly; what the file's
runtime does on top is round every activation to 8 bits (each operator's output has its
own scale and zero point). A float model therefore differs from the runtime by the
quantization noise, which in a poorly conditioned model (a random one, or an aggressive
post-training quantization) can flip the top class. Rounding our activations at the same
points with the same parameters makes the comparison test the conversion itself: weights,
layouts, padding and the order of layers.

Rounding points (graph order; ``PAD``, ``RESHAPE``, ``SOFTMAX``... keep their input's
parameters): the network input, every convolution's output after its fused ReLU6 (our
``ConvBNReLU6`` outputs and each projection's BatchNorm), every residual ``ADD`` (our
``InvertedResidual`` outputs), the global ``MEAN`` (or ``AVERAGE_POOL_2D``) and the classifier layer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import ConvBNReLU6, InvertedResidual
from heads.tf_import.rounding import Grid

Quantization = tuple[float, int, int, int]
#: builders whose rounding points are paired by the graph's structure (``rounding``)
GRAPH_PAIRED = ("ssdlite_mobilenet_v2", "ssd_mobilenet_v2", "deeplabv3_mobilenet_v2")
#: operators whose outputs an 8-bit MobileNetV2 rounds, as our rounding points see them
ROUNDED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "MEAN",
    "AVERAGE_POOL_2D",
    "FULLY_CONNECTED",
)


def fake_quantize(x: Tensor, q: Quantization) -> Tensor:
    """``x`` rounded to the 8-bit grid ``(scale, zero_point, qmin, qmax)``, in float."""
    scale, zero_point, low, high = q
    return (torch.clamp(torch.round(x / scale) + zero_point, low, high) - zero_point) * scale


def rounding_points(model: nn.Module, builder: str) -> list[tuple[nn.Module, bool]]:
    """``(module, on_input)`` of each rounding point of ``model`` in execution order
    (``on_input``: round the module's input rather than its output)."""
    features = model.features if builder == "mobilenet_v2" else model.backbone.features
    points: list[tuple[nn.Module, bool]] = []
    for layer in features:
        if isinstance(layer, InvertedResidual):
            points += [
                (m, False) for m in layer.conv if isinstance(m, ConvBNReLU6 | nn.BatchNorm2d)
            ]
            if layer.use_residual:
                points.append((layer, False))
        else:
            points.append((layer, False))
    if builder == "mobilenet_v2_classifier":
        points += [(model.head.classifier, True), (model.head.classifier[1], False)]
    return points


@contextmanager
def int8_activations(model: nn.Module, builder: str, tflite_path: Path) -> Iterator[bool]:
    """Round ``model``'s activations as the 8-bit file does while the context is open.

    MobileNetV2 classifiers and backbones pair the file's rounding points with ours one to
    one in order; SSDLite detectors and Mobile DeepLabv3 by the graph's structure
    (``rounding.rounding_plan``; a detector's post-processor then also rounds its scores as
    the file's score operator does). Yields ``True`` when activations are rounded,
    ``False`` (nothing changed) otherwise, e.g. for a float file.
    """
    if builder in GRAPH_PAIRED:
        with _planned(model, builder, tflite_path) as emulated:
            yield emulated
        return
    from heads.tf_import.tflite import TFLiteFile

    first, outputs = TFLiteFile(tflite_path).activation_quantization(ROUNDED_OPS)
    points = rounding_points(model, builder) if builder.startswith("mobilenet_v2") else []
    if first is None or len(outputs) != len(points) or any(q is None for q in outputs):
        yield False
        return
    handles = [model.register_forward_pre_hook(lambda m, a: (fake_quantize(a[0], first),))]
    for (module, on_input), q in zip(points, outputs, strict=True):
        if on_input:
            handles.append(
                module.register_forward_pre_hook(lambda m, a, q=q: (fake_quantize(a[0], q),))
            )
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, q=q: fake_quantize(o, q)))
    try:
        yield True
    finally:
        for handle in handles:
            handle.remove()


def requantize(x: Tensor, grid: Grid, channel_dim: int = 1) -> Tensor:
    """``x`` rounded to ``grid`` as the runtime's built-in kernel rounds (``Grid``), in
    float; computed in float64, where a value and its finer rounding are exact."""
    scale, zero_point, low, high = grid.q
    if grid.tie_to_even:
        v = _quantize_op(x, scale, channel_dim)
    else:
        v = x.double() / scale + grid.offset + (zero_point if grid.raw else 0)
        if grid.shifts is not None and x.dim() > channel_dim:
            shape = [1] * x.dim()
            shape[channel_dim] = len(grid.shifts)
            fine = torch.tensor(grid.shifts, dtype=torch.float64).exp2().reshape(shape)
            v = torch.floor(v * fine + 0.5) / fine
            v = torch.floor(v + 0.5)  # the convolutions' kernels round halves up
        else:
            v = _round_away(v)
    v = v - round(grid.offset) - (zero_point if grid.raw else 0)
    return ((torch.clamp(v + zero_point, low, high) - zero_point) * scale).to(x.dtype)


#: ``QUANTIZE`` converts a float tensor 8 values at a time (its vector loop), then the rest
QUANTIZE_VECTOR = 8


def _quantize_op(x: Tensor, scale: float, channel_dim: int) -> Tensor:
    """``x / scale`` rounded as the runtime's ``QUANTIZE`` kernel rounds a float tensor.

    Its vector loop multiplies by the float32 reciprocal of the scale in float32 and rounds
    halves to even (a pixel ``k / 127.5 - 1`` on the grid ``1 / 127.5`` lands on a tie);
    the last ``numel % 8`` values, in the file's channels-last order, go through its scalar
    loop, which divides in float64 (just under a tie: rounded towards zero) and rounds
    halves away from zero. Returns the rounded steps in float64, in ``x``'s layout."""
    s = torch.tensor(scale, dtype=torch.float32)
    v = torch.round(x.float() * (1 / s)).double()
    tail = x.numel() % QUANTIZE_VECTOR
    if tail and x.dim() > channel_dim:
        last = x.float().movedim(channel_dim, -1).reshape(-1)[-tail:].double() / s.item()
        flat = v.movedim(channel_dim, -1).contiguous()
        flat.view(-1)[-tail:] = _round_away(last)
        v = flat.movedim(-1, channel_dim)
    return v


def _round_away(v: Tensor) -> Tensor:
    """Halves away from zero (the runtime's fixed-point rounding)."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


def _rounded(x: Tensor, grids: list[Grid]) -> Tensor:
    for grid in grids:
        x = requantize(x, grid)
    return x


def _output_hook(element: int | None, grids: list[Grid]):  # type: ignore[no-untyped-def]
    def hook(module: nn.Module, args: tuple, out):  # type: ignore[no-untyped-def]
        if element is None:
            return _rounded(out, grids)
        return tuple(_rounded(o, grids) if k == element else o for k, o in enumerate(out))

    return hook


@contextmanager
def _planned(model: nn.Module, builder: str, tflite_path: Path) -> Iterator[bool]:
    """``int8_activations`` of the models paired by ``rounding.rounding_plan``."""
    from heads.tf_import.rounding import rounding_plan

    plan = rounding_plan(tflite_path, model, builder)
    if not plan.points:
        yield False
        return
    handles = []
    for (name, element), grids in plan.points.items():
        module = model.get_submodule(name)
        if element == "input":
            hook = lambda m, a, g=grids: (_rounded(a[0], g), *a[1:])  # noqa: E731
            handles.append(module.register_forward_pre_hook(hook))
        else:
            handles.append(module.register_forward_hook(_output_hook(element, grids)))
    post = getattr(model, "postprocessor", None)
    if post is not None and plan.scores is not None:
        # an instance attribute shadows the method while the context is open (scores are
        # computed outside the network, by the post-processor)
        # (the plan found the score operator's grid: the file is not read again)
        scores, grid = post.class_scores, Grid(plan.scores)
        post.class_scores = lambda logits: requantize(scores(logits), grid)
    try:
        yield True
    finally:
        for handle in handles:
            handle.remove()
        if post is not None and "class_scores" in vars(post):
            del post.class_scores


def exact_copy(model: nn.Module, tflite_path: Path, builder: str) -> nn.Module:
    """A float64 copy of ``model`` (converted from the 8-bit ``tflite_path``) holding the
    file's exact weights (``rounding.exact_weights``): with it and ``int8_activations``
    the runtime's built-in kernels are reproduced to the integer, where float32 flips one
    of their roundings now and then (and a random model amplifies every flip)."""
    from heads.tf_import.rounding import exact_weights

    model = copy.deepcopy(model).double()
    exact_weights(model, tflite_path, builder)
    return model


def score_rounding(tflite_path: Path) -> Callable[[Tensor], Tensor]:
    """Scores (``[..., K]``, any class subset) rounded as an 8-bit detection export's
    score operator (``LOGISTIC`` / ``SOFTMAX``) rounds them; unchanged for a float file."""
    from heads.tf_import.tflite import TFLiteFile

    tfl = TFLiteFile(tflite_path)
    for op, name in enumerate(tfl.op_names()):
        if name in ("LOGISTIC", "SOFTMAX"):
            q = tfl.tensor_quantization(tfl.op_tensors(op)[1][0])
            if q is not None:
                return lambda scores: requantize(scores, Grid(q))
    return lambda scores: scores
