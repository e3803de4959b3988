"""MobileNetV2 recognised by its structure, whatever the file names its layers.

TF-slim, the TF2 Model Garden (``official/vision`` MobileNetV2) and Keras applications
(``tf.keras.applications.MobileNetV2`` / Keras 3) name the same 52 convolutions three ways,
and a TF Lite file exported from any of them names its tensors after TF ops
(``MobileNetV2/Conv2d_0_0/Conv2D;StatefulPartitionedCall/...``). What they share is the
order: a 3x3 stride-2 conv; a depthwise + 1x1 projection (the block without expansion); 16
blocks of 1x1 expansion, depthwise, 1x1 projection; a 1x1 conv (1280 channels at width <= 1);
then either nothing (a backbone) or one classifier layer: a 1x1 conv or a fully connected
layer, of any class count.

``canonical_variables`` takes those layers in execution order and gives them TF-slim's names
(``MobilenetV2/expanded_conv_3/expand/weights``, ``.../BatchNorm/gamma``, ...,
``MobilenetV2/Logits/Conv2d_1c_1x1/weights``), so that one mapping (``names``) serves every
family. Shapes are checked along the chain (each layer's input channels are the previous
layer's outputs), so a file of another network is refused, not mis-assigned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from heads.tf_import.names import Kind, tf_block_scope

Layout = Literal["tflite", "tf"]
#: what a user is told the converter knows (the one-line error of an unknown file)
KNOWN_FAMILIES = (
    "TF-slim MobileNetV2 / DeepLab / Object Detection API (names MobilenetV2/Conv, "
    "expanded_conv_N, logits/semantic, BoxPredictor_N)",
    "TF2 Model Garden MobileNetV2",
    "Keras applications MobileNetV2 (Conv1, block_N_expand, Conv_1, predictions)",
    "TF Lite files exported from any of them",
)
BACKBONE_LAYERS = 52
#: TF-slim scope of the classifier layer, whatever the file called it
LOGITS_SCOPE = "MobilenetV2/Logits/Conv2d_1c_1x1"
BN_NAMES = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass
class Layer:
    """One convolution (or fully connected) layer as a file stores it.

    Attributes:
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        weights: in the file's layout (TF Lite: conv ``OHWI``, depthwise ``1HWC``, linear
            ``OI``; TF / Keras: ``HWIO``, ``HWC1``, ``IO``).
        name: the layer's (or its weight tensor's) name in the file, for messages.
        bias: the bias (BatchNorm folded into it in TF Lite files), or ``None``.
        batchnorm: the following BatchNorm's ``gamma``, ``beta``, ``moving_mean``,
            ``moving_variance`` (missing ``gamma`` / ``beta``: 1 / 0), or ``None``.
    """

    kind: Kind
    weights: np.ndarray
    name: str
    bias: np.ndarray | None = None
    batchnorm: dict[str, np.ndarray] = field(default_factory=dict)


def channels(layer: Layer, layout: Layout) -> tuple[int, int]:
    """``(in, out)`` channels of ``layer`` (a depthwise conv: ``(C, C)``)."""
    w = layer.weights
    if layer.kind == "depthwise":
        c = int(w.shape[3] if layout == "tflite" else w.shape[2])
        return c, c
    if layer.kind == "linear" and w.ndim == 2:
        return (int(w.shape[1]), int(w.shape[0])) if layout == "tflite" else tuple(w.shape)  # type: ignore[return-value]
    if layout == "tflite":
        return int(w.shape[3]), int(w.shape[0])
    return int(w.shape[2]), int(w.shape[3])


def backbone_scopes() -> list[tuple[str, Kind]]:
    """TF-slim scope and kind of each of the 52 backbone layers, in execution order."""
    out: list[tuple[str, Kind]] = [("MobilenetV2/Conv", "conv")]
    for index in range(2, 19):
        scope = f"MobilenetV2/{tf_block_scope(index)}"
        if index > 2:
            out.append((f"{scope}/expand", "conv"))
        out += [(f"{scope}/depthwise", "depthwise"), (f"{scope}/project", "conv")]
    out.append(("MobilenetV2/Conv_1", "conv"))
    return out


def is_mobilenet_v2(layers: list[Layer]) -> bool:
    """Whether the kinds of ``layers`` are MobileNetV2's (with at most one head layer)."""
    expected = [k for _, k in backbone_scopes()]
    kinds = [la.kind for la in layers]
    if kinds[:BACKBONE_LAYERS] != expected:
        return False
    head = kinds[BACKBONE_LAYERS:]
    return head == [] or (len(head) == 1 and head[0] in ("conv", "linear"))


def canonical_variables(layers: list[Layer], layout: Layout, source: str) -> dict[str, np.ndarray]:
    """TF-slim-named variables of a MobileNetV2 given as its layers in execution order.

    Args:
        layers: 52 backbone layers, optionally followed by one classifier layer, or the
            51 up to ``layer_18`` (DeepLab's backbone).
        layout: the layout of the weights (kept: ``convert`` transposes).
        source: the file, for messages.

    Raises:
        ValueError: the layers are not a MobileNetV2 (kinds, count or channels), with the
            file and the first layer that does not fit named.
    """
    scopes = [s for s, _ in backbone_scopes()]
    # DeepLab's backbone: the 51 layers up to layer_18, without the last 1x1 conv
    to_layer_18 = [la.kind for la in layers] == [k for _, k in backbone_scopes()][:-1]
    if to_layer_18:
        scopes = scopes[:-1]
    elif not is_mobilenet_v2(layers):
        raise ValueError(unknown_file_message(source, [la.name for la in layers]))
    out: dict[str, np.ndarray] = {}
    if len(layers) > BACKBONE_LAYERS:
        scopes.append(LOGITS_SCOPE)
    previous = 3
    for scope, layer in zip(scopes, layers, strict=True):
        c_in, c_out = channels(layer, layout)
        if c_in != previous:
            raise ValueError(
                f"{source}: layer {layer.name!r} (as {scope}) takes {c_in} channels, the layer "
                f"before it gives {previous}: not a MobileNetV2"
            )
        previous = c_out
        suffix = "depthwise_weights" if layer.kind == "depthwise" else "weights"
        out[f"{scope}/{suffix}"] = layer.weights
        if layer.bias is not None:
            out[f"{scope}/biases"] = layer.bias
        for key, value in layer.batchnorm.items():
            out[f"{scope}/BatchNorm/{key}"] = value
    return out


def unknown_file_message(source: str, names: list[str]) -> str:
    """The one line for a file of no known family: a few of its tensor names and the
    families the converter reads."""
    shown = ", ".join(repr(n[:80]) for n in names[:3])
    return (
        f"{source}: not a model this converter knows; its {len(names)} weight tensors include "
        f"{shown or 'none'}; it reads: {'; '.join(KNOWN_FAMILIES)}"
    )
