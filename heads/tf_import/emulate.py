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

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import ConvBNReLU6, InvertedResidual

Quantization = tuple[float, int, int, int]
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

    Yields ``True`` when the file's rounding points pair one to one with the model's
    (MobileNetV2 classifiers and backbones of every family), ``False`` (nothing changed)
    otherwise, e.g. for a float file.
    """
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
