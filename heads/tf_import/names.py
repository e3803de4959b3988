"""TF variable names of MobileNetV2, SSDLite and Mobile DeepLabv3 mapped to our modules.

One place for every name rule:

- TF-slim MobileNetV2 (``research/slim/nets/mobilenet``): ``{prefix}/Conv`` is ``layer_1``,
  ``{prefix}/expanded_conv`` is ``layer_2`` (no expansion), ``{prefix}/expanded_conv_N`` is
  ``layer_N+2`` with ``expand`` / ``depthwise`` / ``project`` parts, ``{prefix}/Conv_1`` is
  ``layer_19``; ``prefix`` is ``MobilenetV2`` (classifier, DeepLab) or
  ``FeatureExtractor/MobilenetV2`` (Object Detection API).
- Classifier: ``MobilenetV2/Logits/Conv2d_1c_1x1`` (1001 outputs, background first).
- TF DeepLab head: ``image_pooling``, ``aspp0`` (the 1x1 branch), ``aspp1..3`` (atrous),
  ``concat_projection``, ``logits/semantic``.
- TF Object Detection API SSDLite: extra layers
  ``{prefix}/layer_19_1_Conv2d_{i}_1x1_{d/2}``, ``..._2_Conv2d_{i}_3x3_s2_{d}_depthwise`` and
  ``..._2_Conv2d_{i}_3x3_s2_{d}`` for ``i = 2..5`` (``feature_map_generators``), and
  ``BoxPredictor_{k}/{BoxEncodingPredictor,ClassPredictor}{_depthwise,}`` for the six maps.
  SSD (``ssd_mobilenet_v2``): the same names without the ``_depthwise`` layers (its
  ``..._3x3_s2_{d}`` is a full 3x3 conv, its predictors 1x1 convs).

A ``ConvMapping`` says where one TF layer goes: the conv (or linear) key in our state dict,
our BatchNorm after it (``None`` when our conv has its own bias) and, for outputs that are
ordered differently, which TF output channel each of ours takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from torch import nn

from backbones.layers import InvertedResidual

Kind = Literal["conv", "depthwise", "linear"]
#: TF's box code order (ty, tx, th, tw) -> ours (tx, ty, tw, th)
TF_BOX_CODE_ORDER = (1, 0, 3, 2)


@dataclass(frozen=True)
class ConvMapping:
    """Where one TF layer's variables go.

    Attributes:
        tf_scope: e.g. ``MobilenetV2/expanded_conv_3/expand``.
        conv: our module path of the ``nn.Conv2d`` / ``nn.Linear``.
        bn: our module path of the following ``nn.BatchNorm2d``, or ``None`` when the conv
            carries a bias (TF ``biases``).
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        out_index: for each of our output channels, the TF output channel it takes
            (``None``: the same order).
    """

    tf_scope: str
    conv: str
    bn: str | None
    kind: Kind = "conv"
    out_index: tuple[int, ...] | None = None


def tf_block_scope(index: int) -> str:
    """TF-slim scope of our ``layer_{index}`` (1-based), e.g. 3 -> ``expanded_conv_1``."""
    if index == 1:
        return "Conv"
    if index == 19:
        return "Conv_1"
    return "expanded_conv" if index == 2 else f"expanded_conv_{index - 2}"


def backbone_mappings(features: nn.Sequential, prefix: str, tf_prefix: str) -> list[ConvMapping]:
    """Mappings of every built layer of a ``MobileNetV2.features`` under ``prefix``."""
    out = []
    for i, layer in enumerate(features, start=1):
        scope = f"{tf_prefix}/{tf_block_scope(i)}"
        base = f"{prefix}.{i - 1}"
        if isinstance(layer, InvertedResidual):
            parts = []
            if layer.expand_ratio != 1:
                parts.append(("expand", "conv"))
            parts += [("depthwise", "depthwise"), ("project", "conv")]
            for j, (part, kind) in enumerate(parts):
                if part == "project":
                    out.append(
                        ConvMapping(f"{scope}/project", f"{base}.conv.{j}", f"{base}.conv.{j + 1}")
                    )
                else:
                    out.append(
                        ConvMapping(
                            f"{scope}/{part}", f"{base}.conv.{j}.0", f"{base}.conv.{j}.1", kind
                        )  # type: ignore[arg-type]
                    )
        else:  # ConvBNReLU6: layer_1 and layer_19
            out.append(ConvMapping(scope, f"{base}.0", f"{base}.1"))
    return out


def classifier_mappings(model: nn.Module, tf_classes: int = 1001) -> list[ConvMapping]:
    """``mobilenet_v2_classifier``: backbone + ``Logits/Conv2d_1c_1x1`` (TF's class 0 is
    background and is dropped when the model has ``tf_classes - 1`` classes)."""
    out = backbone_mappings(model.backbone.features, "backbone.features", "MobilenetV2")
    num_classes = model.head.classifier[1].out_features
    offset = tf_classes - num_classes
    if offset not in (0, 1):
        raise ValueError(f"TF logits have {tf_classes} classes, the model {num_classes}")
    index = tuple(range(offset, tf_classes)) if offset else None
    out.append(
        ConvMapping("MobilenetV2/Logits/Conv2d_1c_1x1", "head.classifier.1", None, "linear", index)
    )
    return out


def deeplab_mappings(model: nn.Module) -> list[ConvMapping]:
    """``deeplabv3_mobilenet_v2``: backbone (``MobilenetV2``) + TF DeepLab's head names."""
    out = backbone_mappings(model.backbone.features, "backbone.features", "MobilenetV2")
    out.append(
        ConvMapping("image_pooling", "head.image_pooling.conv.0", "head.image_pooling.conv.1")
    )
    for k in range(len(model.head.branches)):
        out.append(ConvMapping(f"aspp{k}", f"head.branches.{k}.0", f"head.branches.{k}.1"))
    out.append(ConvMapping("concat_projection", "head.project.0", "head.project.1"))
    out.append(ConvMapping("logits/semantic", "head.classifier", None))
    return out


def ssd_extra_scope(index: int, depth: int, separable: bool = True) -> tuple[str, ...]:
    """TF names of extra layer ``index`` (2..5) of output ``depth``: 1x1, depthwise, 1x1
    (SSDLite, ``separable``) or 1x1, 3x3 (SSD)."""
    base = "FeatureExtractor/MobilenetV2/layer_19"
    one = f"{base}_1_Conv2d_{index}_1x1_{depth // 2}"
    two = f"{base}_2_Conv2d_{index}_3x3_s2_{depth}"
    return (one, f"{two}_depthwise", two) if separable else (one, two)


def coco91_index(category_ids: list[int]) -> list[int]:
    """TF OD API class-output index of each of our classes: background (0), then the COCO
    ids of our contiguous labels (TF's 91-way output is background + ids 1..90)."""
    return [0, *category_ids]


def ssdlite_mappings(
    model: nn.Module, category_ids: list[int] | None = None, tf_classes: int = 91
) -> list[ConvMapping]:
    """``ssdlite_mobilenet_v2`` and ``ssd_mobilenet_v2`` (``model.separable`` False: two
    convs per extra layer, 1x1 predictors): backbone under ``FeatureExtractor/MobilenetV2``,
    the four extra layers and the six ``BoxPredictor_k``; box outputs are reordered from TF's
    ``(ty, tx, th, tw)`` per anchor, class outputs from TF's 91-way COCO ids to our labels
    (``category_ids``: COCO id of each contiguous label; default 1..C when the model has
    ``tf_classes - 1`` classes)."""
    out = backbone_mappings(
        model.backbone.features, "backbone.features", "FeatureExtractor/MobilenetV2"
    )
    separable = model.separable
    for j, extra in enumerate(model.extras):
        depth = extra[-1][0].out_channels
        scopes = ssd_extra_scope(j + 2, depth, separable)
        kinds = ("conv", "depthwise", "conv") if separable else ("conv", "conv")
        out += [
            ConvMapping(scope, f"extras.{j}.{i}.0", f"extras.{j}.{i}.1", kind)  # type: ignore[arg-type]
            for i, (scope, kind) in enumerate(zip(scopes, kinds, strict=True))
        ]
    num_classes = model.num_classes
    if category_ids is None:
        if num_classes + 1 == tf_classes:
            category_ids = list(range(1, tf_classes))
        else:
            from heads.categories import coco_category_ids

            category_ids = coco_category_ids()
    if len(category_ids) != num_classes:
        raise ValueError(f"{len(category_ids)} category ids for a model of {num_classes} classes")
    class_index = coco91_index(category_ids)
    for k, n in enumerate(model.anchor_generator.num_anchors_per_location):
        box = tuple(a * 4 + c for a in range(n) for c in TF_BOX_CODE_ORDER)
        cls = tuple(a * tf_classes + c for a in range(n) for c in class_index)
        for tf_name, ours, index in (
            ("BoxEncodingPredictor", "box_predictors", box),
            ("ClassPredictor", "cls_predictors", cls),
        ):
            if not separable:  # SSD: one 1x1 conv with bias
                out.append(
                    ConvMapping(
                        f"BoxPredictor_{k}/{tf_name}", f"head.{ours}.{k}", None, "conv", index
                    )
                )
                continue
            out += [
                ConvMapping(
                    f"BoxPredictor_{k}/{tf_name}_depthwise",
                    f"head.{ours}.{k}.0.0",
                    f"head.{ours}.{k}.0.1",
                    "depthwise",
                ),
                ConvMapping(
                    f"BoxPredictor_{k}/{tf_name}", f"head.{ours}.{k}.1", None, "conv", index
                ),
            ]
    return out


def out_index_array(mapping: ConvMapping) -> np.ndarray | None:
    return None if mapping.out_index is None else np.asarray(mapping.out_index, dtype=np.int64)
