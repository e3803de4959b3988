"""DeepLab TF Lite files whose tensors carry TF op names (``Conv2D_3``,
``FusedBatchNormV3_1;depthwise``), as TF2's converter writes them: placed by the graph.

The first 51 convolutions, in graph order, are a MobileNetV2 without its last 1x1 conv
(DeepLab reads ``layer_18``, ``families``); the four after them are TF DeepLab's head
without ASPP, told apart by what each reads: ``image_pooling`` a global mean,
``aspp0`` the backbone's output, ``concat_projection`` the concatenation (which must put
the pooled branch first, as our head does) and ``logits/semantic`` the projection.
"""

from __future__ import annotations

import numpy as np

from heads.tf_import.detection import Graph
from heads.tf_import.families import backbone_scopes, canonical_variables
from heads.tf_import.tflite import TFLiteConv, TFLiteFile, conv_layers

#: MobileNetV2 up to ``layer_18`` (no ``Conv_1``)
DEEPLAB_BACKBONE = 51
_POOLS = ("MEAN", "AVERAGE_POOL_2D")
_HEAD = ("image_pooling", "aspp0", "concat_projection", "logits/semantic")


def is_deeplab(convs: list[TFLiteConv]) -> bool:
    """Whether the convolutions' kinds are a MobileNetV2 to ``layer_18`` and four 1x1
    convolutions (DeepLab's head without ASPP)."""
    kinds = [la.kind for la in conv_layers(convs)]
    backbone = [k for _, k in backbone_scopes()][:DEEPLAB_BACKBONE]
    return kinds[:DEEPLAB_BACKBONE] == backbone and kinds[DEEPLAB_BACKBONE:] == ["conv"] * 4


def deeplab_variables(tfl: TFLiteFile, convs: list[TFLiteConv]) -> dict[str, np.ndarray]:
    """TF-slim / TF DeepLab names for the convolutions of a file that ``is_deeplab``.

    Raises:
        ValueError: the head's convolutions are not wired as TF DeepLab's (named).
    """
    source = str(tfl.path)
    layers = conv_layers(convs[:DEEPLAB_BACKBONE])
    out = canonical_variables(layers, "tflite", source)
    graph = Graph(tfl)
    features = convs[DEEPLAB_BACKBONE - 1].output
    head = convs[DEEPLAB_BACKBONE:]
    by_output = {c.output: c for c in head}
    roles: dict[str, TFLiteConv] = {}
    for conv in head:
        seen: list[str] = []
        source_tensor = graph.through(conv.source, seen)
        op = graph.producer.get(source_tensor)
        name = None if op is None else graph.names[op]
        if name in _POOLS:
            roles["image_pooling"] = conv
        elif source_tensor == features:
            roles["aspp0"] = conv
        elif name == "CONCATENATION":
            order = [_branch(graph, t, by_output) for t in tfl.op_tensors(op)[0]]  # type: ignore[arg-type]
            if order != [roles.get("image_pooling"), roles.get("aspp0")] or None in order:
                raise ValueError(
                    f"{source}: DeepLab's head concatenates its branches in another order "
                    "than image pooling, 1x1 (TF DeepLab's, ours)"
                )
            roles["concat_projection"] = conv
        elif source_tensor in by_output and by_output[source_tensor] is roles.get(
            "concat_projection"
        ):
            roles["logits/semantic"] = conv
    missing = [r for r in _HEAD if r not in roles]
    if missing:
        raise ValueError(
            f"{source}: a MobileNetV2 with four layers after it, but no DeepLab {missing} "
            "among them (TF DeepLab without ASPP: image_pooling, aspp0, concat_projection, "
            "logits/semantic)"
        )
    for scope, conv in roles.items():
        out[f"{scope}/weights"] = conv.weights
        if conv.bias is not None:
            out[f"{scope}/biases"] = conv.bias
    return out


def _branch(graph: Graph, tensor: int, by_output: dict[int, TFLiteConv]) -> TFLiteConv | None:
    """The head convolution a concatenation input comes from (through resizes)."""
    while True:
        tensor = graph.through(tensor, [])
        if tensor in by_output:
            return by_output[tensor]
        op = graph.producer.get(tensor)
        if op is None or graph.names[op] not in ("RESIZE_BILINEAR", "TILE", "BROADCAST_TO"):
            return None
        tensor = graph.tfl.op_tensors(op)[0][0]
