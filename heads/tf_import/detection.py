"""SSD / SSDLite TF Lite detection exports: the Object Detection API's graphs that end in
the custom operator ``TFLite_Detection_PostProcess`` (``export_tflite_ssd_graph`` in TF1,
``export_tflite_graph_tf2`` in TF2).

Such a file names its tensors after TF ops, not after the variables, so its layers are
placed by the graph itself: the post-processing op's first two inputs are the box
encodings ``[1, N, 4]`` and the class scores ``[1, N, C + 1]``, each a concatenation of
one 1x1 convolution per feature map (in map order). In SSDLite each of those reads a 3x3
depthwise convolution, which reads its feature map; in SSD (``ssd_mobilenet_v2``,
``kernel_size: 1``) it reads the map itself. Every other convolution, in graph order, is
the MobileNetV2 (``families``: 52 layers) and then the four extra layers (three each in
SSDLite: 1x1, 3x3 depthwise, 1x1; two in SSD: 1x1, 3x3). The predictors decide which of
the two the file is, and the extra layers must then agree. The taps are checked (map 0 is ``layer_15``'s expansion, map 1 ``layer_19``, maps 2-5 the extra
layers' outputs), so a graph wired differently is refused, not mis-assigned.

The file also holds what our model must match outside the weights: the anchors (a
constant ``[N, 4]`` of ``(ycenter, xcenter, h, w)`` in [0, 1]), the box coder's scales, the
score conversion in front of the op (sigmoid or softmax) and the NMS settings (its
flexbuffer options). ``check_anchors`` compares the anchors with ours and refuses a file
whose anchors differ (we do not carry foreign anchors: ours follow the input size, a
stored table holds for one size only); ``postprocess_options`` gives the rest as builder
options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from heads.tf_import.families import (
    BACKBONE_LAYERS,
    backbone_scopes,
    canonical_variables,
    is_mobilenet_v2,
)
from heads.tf_import.names import ssd_extra_scope
from heads.tf_import.tflite import TFLiteConv, TFLiteFile, TFLiteTensor, conv_layers

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
#: operators between a predictor's 1x1 conv and the post-processing op that keep values
#: (or only re-encode them: 8-bit files)
_PASS_THROUGH = ("RESHAPE", "SQUEEZE", "DEQUANTIZE", "QUANTIZE")
_SCORE_OPS = {"LOGISTIC": "sigmoid", "SOFTMAX": "softmax"}
#: the canonical scope of the expansion conv whose output is SSDLite's first map (layer_15)
_FIRST_TAP = "MobilenetV2/expanded_conv_13/expand"
_SSD_PREFIX = "FeatureExtractor/"
EXTRA_LAYERS = 4
ANCHOR_TOLERANCE = 1e-5


@dataclass
class DetectionExport:
    """What a detection export holds besides its operators.

    Attributes:
        variables: weights in the Object Detection API's names (TF Lite layouts, BatchNorm
            folded into ``biases``).
        anchors: ``[N, 4]`` ``(ycenter, xcenter, h, w)``, fractions of the input size.
        anchor_tolerance: how far ours may be from them: ``ANCHOR_TOLERANCE``, or the
            rounding of the stored type (float16 files: ``2**-11`` of a value <= 1; 8-bit
            anchors: half their step), see ``anchor_tolerance``.
        options: the post-processing op's options (``y_scale``, ``nms_iou_threshold``,
            ``max_detections``, ``num_classes``, ``use_regular_nms``, ...).
        score_activation: the score conversion in front of the op.
        input_size: ``(H, W)`` of the graph's input.
        map_sizes: ``(h, w)`` of the six feature maps.
        tensors: indices of the op's input tensors ``box_encodings``, ``class_predictions``,
            ``anchors`` (the runtime's values of the first two are the network's raw
            outputs) and of its outputs ``boxes`` ``[1, D, 4]`` (ymin, xmin, ymax, xmax in
            [0, 1]), ``classes`` (0-based, background dropped), ``scores``,
            ``num_detections``.
        separable: SSDLite (depthwise + 1x1 predictors and extra layers) or SSD (1x1
            predictors, 1x1 + 3x3 extra layers).
    """

    variables: dict[str, np.ndarray]
    anchors: np.ndarray
    anchor_tolerance: float
    options: dict[str, Any]
    score_activation: str
    input_size: tuple[int, int]
    map_sizes: list[tuple[int, int]] = field(default_factory=list)
    tensors: dict[str, int] = field(default_factory=dict)
    separable: bool = True


def postprocess_op(tfl: TFLiteFile) -> int | None:
    """Index of the file's ``TFLite_Detection_PostProcess`` operator, or ``None``."""
    for i in range(len(tfl.op_names())):
        if tfl.custom_code(i) == POSTPROCESS_OP:
            return i
    return None


class Graph:
    """Producers of tensors, for walking a TF Lite graph backwards."""

    def __init__(self, tfl: TFLiteFile) -> None:
        self.tfl = tfl
        self.names = tfl.op_names()
        self.producer: dict[int, int] = {}
        for i in range(len(self.names)):
            for t in tfl.op_tensors(i)[1]:
                self.producer[t] = i

    def through(self, tensor: int, seen: list[str]) -> int:
        """The tensor a chain of pass-through (and score) operators starts from; the
        operators met are appended to ``seen``."""
        while tensor in self.producer:
            op = self.producer[tensor]
            name = self.names[op]
            if name not in _PASS_THROUGH and name not in _SCORE_OPS:
                break
            seen.append(name)
            tensor = self.tfl.op_tensors(op)[0][0]
        return tensor

    def conv_sources(self, tensor: int, seen: list[str], where: str) -> list[int]:
        """Operator indices of the convolutions concatenated into ``tensor``, in order."""
        tensor = self.through(tensor, seen)
        op = self.producer.get(tensor)
        name = None if op is None else self.names[op]
        if name == "CONCATENATION":
            out = []
            for t in self.tfl.op_tensors(op)[0]:  # type: ignore[arg-type]
                out += self.conv_sources(t, seen, where)
            return out
        if name == "CONV_2D":
            return [op]  # type: ignore[list-item]
        raise ValueError(
            f"{self.tfl.path}: the {where} of {POSTPROCESS_OP} come from a {name or 'constant'} "
            "operator, not from one 1x1 convolution per feature map"
        )


def read_detection_export(tfl: TFLiteFile, op: int) -> DetectionExport:
    """The weights (Object Detection API names), anchors and options of the detection
    export ``tfl`` whose post-processing operator is ``op``.

    Raises:
        ValueError: the graph is not an SSD(Lite) MobileNetV2 wired as the Object Detection
            API wires it (named: which part and what was found).
    """
    source = str(tfl.path)
    inputs, outputs = tfl.op_tensors(op)
    if len(inputs) != 3:
        raise ValueError(f"{source}: {POSTPROCESS_OP} has {len(inputs)} inputs, expected 3")
    graph = Graph(tfl)
    convs = {c.index: c for c in tfl.convs()}
    box_seen: list[str] = []
    cls_seen: list[str] = []
    box_ops = graph.conv_sources(inputs[0], box_seen, "box encodings")
    cls_ops = graph.conv_sources(inputs[1], cls_seen, "class predictions")
    scores = [_SCORE_OPS[n] for n in cls_seen if n in _SCORE_OPS]
    if len(scores) != 1 or any(n in _SCORE_OPS for n in box_seen):
        raise ValueError(
            f"{source}: expected one LOGISTIC or SOFTMAX before {POSTPROCESS_OP}'s class "
            f"input, found {cls_seen or 'none'}"
        )
    if len(box_ops) != len(cls_ops):
        raise ValueError(
            f"{source}: {len(box_ops)} box predictors but {len(cls_ops)} class predictors"
        )
    anchors_tensor = tfl.constant(inputs[2], tfl.dequantized())
    if anchors_tensor is None:
        raise ValueError(f"{source}: the anchors of {POSTPROCESS_OP} are not a constant tensor")
    predictor_ops: set[int] = set()
    maps: list[int] = []
    variables: dict[str, np.ndarray] = {}
    kinds: set[str] = set()
    for k, (box_op, cls_op) in enumerate(zip(box_ops, cls_ops, strict=True)):
        feature = []
        for kind, op_index in (("BoxEncodingPredictor", box_op), ("ClassPredictor", cls_op)):
            conv = convs[op_index]
            scope = f"BoxPredictor_{k}/{kind}"
            size = tuple(int(n) for n in conv.weights.shape[1:3])
            if size != (1, 1):
                raise ValueError(
                    f"{source}: predictor {k}'s {kind} is a {size[0]}x{size[1]} conv; SSDLite "
                    "and SSD MobileNetV2 (kernel_size 1) predict with 1x1 convs"
                )
            source_op = graph.producer.get(graph.through(conv.source, []))
            if source_op in convs and convs[source_op].op == "DEPTHWISE_CONV_2D":
                depthwise = convs[source_op]  # SSDLite: 3x3 depthwise, then the 1x1
                predictor_ops.add(source_op)
                feature.append(graph.through(depthwise.source, []))
                _put(variables, f"{scope}_depthwise", depthwise)
                kinds.add("SSDLite (depthwise + 1x1)")
            else:  # SSD: the 1x1 conv reads the map
                feature.append(graph.through(conv.source, []))
                kinds.add("SSD (1x1)")
            predictor_ops.add(op_index)
            _put(variables, scope, conv)
        if feature[0] != feature[1]:
            raise ValueError(f"{source}: predictor {k}'s box and class layers read different maps")
        maps.append(feature[0])
    if len(kinds) != 1:
        raise ValueError(
            f"{source}: its box predictors mix {' and '.join(sorted(kinds))} layers; SSD and "
            "SSDLite each use one kind"
        )
    separable = kinds == {"SSDLite (depthwise + 1x1)"}
    rest = [c for i, c in sorted(convs.items()) if i not in predictor_ops]
    _place_feature_extractor(rest, maps, variables, source, separable)
    shape = tfl.input_shape()
    return DetectionExport(
        variables,
        np.asarray(anchors_tensor.values, dtype=np.float32),
        anchor_tolerance(anchors_tensor),
        tfl.custom_options(op),
        scores[0],
        (int(shape[1]), int(shape[2])),
        [_map_size(tfl, t) for t in maps],
        {
            **dict(zip(("box_encodings", "class_predictions", "anchors"), inputs, strict=True)),
            **dict(zip(("boxes", "classes", "scores", "num_detections"), outputs, strict=False)),
        },
        separable,
    )


def anchor_tolerance(tensor: TFLiteTensor) -> float:
    """How far the stored anchors may be from ours: float32 ``ANCHOR_TOLERANCE``; float16
    (a float16-weights file) rounds to 11 bits; 8-bit anchors (TF1's quantized exports,
    e.g. Coral's) to half their quantization step."""
    if tensor.scale is not None and tensor.raw.dtype.kind in "iu":
        return max(ANCHOR_TOLERANCE, 0.5 * float(np.max(tensor.scale)) + ANCHOR_TOLERANCE)
    if tensor.raw.dtype.itemsize >= 4:
        return ANCHOR_TOLERANCE
    return max(ANCHOR_TOLERANCE, 2.0**-11)


def _put(variables: dict[str, np.ndarray], scope: str, conv: TFLiteConv) -> None:
    suffix = "depthwise_weights" if conv.op == "DEPTHWISE_CONV_2D" else "weights"
    variables[f"{scope}/{suffix}"] = conv.weights
    if conv.bias is not None:
        variables[f"{scope}/biases"] = conv.bias


def _map_size(tfl: TFLiteFile, tensor: int) -> tuple[int, int]:
    shape = tfl.tensor_shape(tensor)
    return int(shape[1]), int(shape[2])


def _place_feature_extractor(
    convs: list[TFLiteConv],
    maps: list[int],
    variables: dict[str, np.ndarray],
    source: str,
    separable: bool = True,
) -> None:
    """Name the MobileNetV2 and the extra layers (``convs``, graph order) and check that
    the six ``maps`` are the taps of SSDLite (``separable``: three convs per extra layer)
    or SSD (two)."""
    per_extra = 3 if separable else 2
    model = "SSDLite" if separable else "SSD"
    expected = BACKBONE_LAYERS + per_extra * EXTRA_LAYERS
    layers = conv_layers(convs)
    if len(convs) != expected or not is_mobilenet_v2(layers[:BACKBONE_LAYERS]):
        raise ValueError(
            f"{source}: {len(convs)} convolutions outside the box predictors; {model} "
            f"MobileNetV2 has {expected} (a MobileNetV2 and {EXTRA_LAYERS} extra layers of "
            f"{per_extra})"
        )
    extra_kinds = [la.kind for la in layers[BACKBONE_LAYERS:]]
    wanted = ["conv", "depthwise", "conv"] if separable else ["conv", "conv"]
    if extra_kinds != wanted * EXTRA_LAYERS:
        raise ValueError(
            f"{source}: the extra layers are {extra_kinds}; {model}'s are "
            f"{'1x1, 3x3 depthwise, 1x1' if separable else '1x1, 3x3'} convs, {EXTRA_LAYERS} times"
        )
    if len(maps) != 2 + EXTRA_LAYERS:
        raise ValueError(f"{source}: {len(maps)} feature maps, {model} has {2 + EXTRA_LAYERS}")
    backbone = canonical_variables(layers[:BACKBONE_LAYERS], "tflite", source)
    variables.update({_SSD_PREFIX + k: v for k, v in backbone.items()})
    first_tap = [s for s, _ in backbone_scopes()].index(_FIRST_TAP)
    taps = [convs[first_tap].output, convs[BACKBONE_LAYERS - 1].output]
    for j in range(EXTRA_LAYERS):
        start = BACKBONE_LAYERS + per_extra * j
        layer = convs[start : start + per_extra]
        names = ssd_extra_scope(j + 2, int(layer[-1].weights.shape[0]), separable)
        for scope, conv in zip(names, layer, strict=True):
            _put(variables, scope, conv)
        taps.append(layer[-1].output)
    for k, (tap, found) in enumerate(zip(taps, maps, strict=True)):
        if tap != found:
            raise ValueError(
                f"{source}: box predictor {k} reads tensor {found}, {model}'s map {k} is "
                f"tensor {tap} (layer_15 expansion, layer_19, then the extra layers)"
            )


def our_anchors(model: Any, input_size: tuple[int, int]) -> np.ndarray:
    """Our model's anchors for ``input_size`` as the file stores them: ``[N, 4]``
    ``(ycenter, xcenter, h, w)`` in fractions of the input."""
    height, width = input_size
    with torch.no_grad():
        boxes = model.anchors_for(input_size, model.feature_sizes(input_size)).double()
    x1, y1, x2, y2 = boxes.unbind(1)
    out = torch.stack([(y1 + y2) / 2 / height, (x1 + x2) / 2 / width,
                       (y2 - y1) / height, (x2 - x1) / width], 1)  # fmt: skip
    return out.numpy()


def check_anchors(model: Any, export: DetectionExport, source: str) -> float:
    """Largest difference between the file's anchors and ours; raises ``ValueError``
    naming the first anchor that differs by more than ``export.anchor_tolerance`` (its map,
    cell and index within the cell, both values)."""
    ours = our_anchors(model, export.input_size)
    theirs = export.anchors.astype(np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(
            f"{source}: {len(theirs)} anchors in the file, our model makes {len(ours)} at "
            f"{export.input_size} (maps {export.map_sizes}, anchors per cell "
            f"{model.anchor_generator.num_anchors_per_location})"
        )
    diff = np.abs(ours - theirs).max(axis=1)
    bad = np.nonzero(diff > export.anchor_tolerance)[0]
    if len(bad):
        i = int(bad[0])
        k, cell, anchor = _locate(
            i, export.map_sizes, model.anchor_generator.num_anchors_per_location
        )
        raise ValueError(
            f"{source}: anchor {i} (map {k}, cell {cell}, anchor {anchor} of the cell) is "
            f"{np.round(theirs[i], 5).tolist()} (ycenter, xcenter, h, w), ours "
            f"{np.round(ours[i], 5).tolist()}; {len(bad)} of {len(ours)} anchors differ: "
            "the file's anchor generator is not SSD(Lite)'s (min_scale 0.2, max_scale 0.95, "
            "aspect ratios 1, 2, 1/2, 3, 1/3), which this converter does not carry"
        )
    return float(diff.max())


def _locate(
    index: int, sizes: list[tuple[int, int]], per_cell: list[int]
) -> tuple[int, tuple[int, int], int]:
    for k, ((h, w), n) in enumerate(zip(sizes, per_cell, strict=True)):
        if index < h * w * n:
            cell, anchor = divmod(index, n)
            return k, divmod(cell, w), anchor
        index -= h * w * n
    raise IndexError(index)


def postprocess_options(export: DetectionExport, source: str) -> dict[str, Any]:
    """Builder options of ``ssdlite_mobilenet_v2`` / ``ssd_mobilenet_v2`` that reproduce the
    file's decoding and post-processing: ``box_scales``, ``score_activation``, ``score_threshold``, ``nms_iou``,
    ``max_detections`` and ``class_agnostic_nms`` (TF Lite's fast NMS, one class per box)."""
    o = export.options
    try:
        scales = tuple(_float32(o[k]) for k in ("x_scale", "y_scale", "w_scale", "h_scale"))
        out: dict[str, Any] = {
            "box_scales": scales,
            "score_activation": export.score_activation,
            "score_threshold": _float32(o["nms_score_threshold"]),
            "nms_iou": _float32(o["nms_iou_threshold"]),
            "max_detections": int(o["max_detections"]),
            "class_agnostic_nms": not bool(o.get("use_regular_nms", False)),
        }
    except KeyError as err:
        raise ValueError(f"{source}: {POSTPROCESS_OP} has no option {err}") from None
    per_detection = int(o.get("max_classes_per_detection", 1))
    if out["class_agnostic_nms"] and per_detection != 1:
        raise ValueError(
            f"{source}: {POSTPROCESS_OP} gives {per_detection} classes per box; only 1 is "
            "reproduced"
        )
    return out


def _float32(value: Any) -> float:
    """A float32 option as it was written (0.6, not 0.6000000238418579)."""
    return float(f"{float(value):.7g}")
