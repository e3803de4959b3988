"""SSDLite on MobileNetV2 (MobileNetV2 paper, section 6.2; TF ``ssdlite_mobilenet_v2_coco``).

Wiring: the expansion output of layer_15 (576 channels, stride 16) and layer_19 (1280
channels, stride 32), four extra layers of depth 512, 256, 256, 128 (stride 64..512), and a
depthwise-separable box predictor on all six maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import ConvBNReLU6, Padding
from backbones.mobilenetv2 import MIN_CHANNELS, MobileNetV2
from backbones.registry import register_model
from heads.anchors import AnchorLayout, SSDAnchorGenerator
from heads.box_coder import BoxCoder
from heads.categories import coco_categories
from heads.detection_loss import MultiBoxLoss, MultiBoxLossOptions
from heads.outputs import DetectorOutputs
from heads.postprocess import PostprocessOptions, ScoreActivation, SSDPostprocessor
from heads.pretrained import TF_DOWNLOAD_URL, TF_RANGE, WeightsEntry
from heads.weights_loader import (
    BACKBONE_ARCHITECTURE,
    OD_MIN_DEPTH,
    POSTPROCESS_OPTIONS,
    architecture_of,
)
from heads.weights_transfer import load_backbone_weights, load_weights

SSDLITE_FEATURES = ("layer_15_expansion", "layer_19")
EXTRA_DEPTHS = (512, 256, 256, 128)
# TF ssdlite config: BN epsilon 1e-3; torchvision's SSDLite: momentum 0.03.
SSD_BN = {"bn_eps": 1e-3, "bn_momentum": 0.03}
HEAD_INIT_STD = 0.03


#: state-dict prefixes of the class-dependent layers (re-initialized when fine-tuning)
CLASS_PREDICTORS = ("head.cls_predictors.",)


def _extra_layer(
    in_channels: int, depth: int, padding: Padding = "torch", separable: bool = True
) -> nn.Sequential:
    """1x1 conv to depth/2 -> 3x3 depthwise stride 2 -> 1x1 conv to depth (BN + ReLU6 each);
    not ``separable`` (SSD): 1x1 conv to depth/2 -> 3x3 stride-2 conv to depth."""
    mid = depth // 2
    if not separable:
        return nn.Sequential(
            ConvBNReLU6(in_channels, mid, 1, **SSD_BN),
            ConvBNReLU6(mid, depth, 3, stride=2, padding=padding, **SSD_BN),
        )
    return nn.Sequential(
        ConvBNReLU6(in_channels, mid, 1, **SSD_BN),
        ConvBNReLU6(mid, mid, 3, stride=2, groups=mid, padding=padding, **SSD_BN),
        ConvBNReLU6(mid, depth, 1, **SSD_BN),
    )


def _predictor(in_channels: int, out_channels: int, separable: bool = True) -> nn.Module:
    """SSDLite predictor: 3x3 depthwise (BN, ReLU6) -> 1x1 conv with bias; not
    ``separable`` (SSD, the Object Detection API's ``kernel_size: 1``): the 1x1 conv alone."""
    if not separable:
        return nn.Conv2d(in_channels, out_channels, 1)
    return nn.Sequential(
        ConvBNReLU6(in_channels, in_channels, 3, groups=in_channels, **SSD_BN),
        nn.Conv2d(in_channels, out_channels, 1),
    )


class SSDLiteHead(nn.Module):
    """Class and box predictors for every feature map.

    Args:
        in_channels: channels of each map.
        num_anchors: anchors per location of each map.
        num_classes: object classes ``C`` (background is added as index 0).
        separable: SSDLite's depthwise + 1x1 predictors; ``False``: SSD's 1x1 convs.

    Forward: list of ``[B, C_k, h_k, w_k]`` -> ``cls_logits`` ``[B, A, C + 1]`` and
    ``box_deltas`` ``[B, A, 4]``, anchors ordered map, row, column, anchor.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_anchors: Sequence[int],
        num_classes: int,
        separable: bool = True,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(num_anchors):
            raise ValueError(
                f"{len(in_channels)} feature maps but {len(num_anchors)} anchor counts"
            )
        self.num_classes = num_classes
        self.cls_predictors = nn.ModuleList(
            _predictor(c, n * (num_classes + 1), separable)
            for c, n in zip(in_channels, num_anchors, strict=True)
        )
        self.box_predictors = nn.ModuleList(
            _predictor(c, n * 4, separable) for c, n in zip(in_channels, num_anchors, strict=True)
        )

    @staticmethod
    def _flatten(x: Tensor, k: int) -> Tensor:
        # [B, n*k, h, w] -> [B, h, w, n*k] -> [B, h*w*n, k]
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        logits = [
            self._flatten(p(f), self.num_classes + 1)
            for p, f in zip(self.cls_predictors, features, strict=True)
        ]
        deltas = [
            self._flatten(p(f), 4) for p, f in zip(self.box_predictors, features, strict=True)
        ]
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)


class SSDLite(nn.Module):
    """SSDLite detector: backbone taps + extra layers + head, anchors, loss, post-processing.

    Args:
        backbone: a backbone returning (at least) the two tap maps named in ``taps``.
        num_classes: object classes ``C`` (without background).
        taps: backbone feature names feeding the first two maps.
        extra_depths: output channels of the extra layers.
        anchor_layout: ``"tf"`` (2034 anchors at 320) or ``"torchvision"`` (3234).
        min_scale, max_scale: anchor scales of the first and last map.
        loss: matching and hard negative mining of the multibox loss
            (``MultiBoxLossOptions``).
        postprocess: thresholds and caps of the detections (``PostprocessOptions``).
        score_activation: ``"softmax"`` or ``"sigmoid"`` class scores (see
            ``SSDPostprocessor``).
        box_scales: the box coder's ``(x, y, w, h)`` scales (see ``BoxCoder``).
        image_size: the square input size the model is meant for; informative only,
            anchors follow the actual input.
        padding: of the extra layers' stride-2 convs: ``"torch"`` (symmetric) or ``"tf"``
            ("SAME", as TF's released detectors; see ``backbones.MobileNetV2``).
        class_prior: the probability every object class starts with at every anchor, as
            TF's ``class_prediction_bias_init``: the class predictors' biases start at
            ``log(prior / C) - log(1 - prior)`` for each class and 0 for the background, so
            the first steps do not spend themselves unlearning a 50% object score on
            thousands of background anchors. ``None``: every bias starts at 0.
        separable: SSDLite's depthwise-separable extra layers and predictors (default);
            ``False``: SSD's (a 3x3 stride-2 conv after each extra layer's 1x1, 1x1 conv
            predictors), the Object Detection API's ``ssd_mobilenet_v2``.

    Forward (``images`` ``[B, 3, H, W]``, normalized to [-1, 1]):
        - eval: a list of ``B`` dicts with ``boxes`` ``[D, 4]`` (x1, y1, x2, y2 in input
          pixels), ``scores`` ``[D]``, ``labels`` ``[D]`` (``0..C-1``).
        - train: a dict with ``cls_logits`` ``[B, A, C + 1]``, ``box_deltas`` ``[B, A, 4]``
          and ``anchors`` ``[A, 4]``; pass it with the targets to ``compute_loss``.

    ``forward_raw`` returns only the network's two tensors as ``DetectorOutputs``
    (``heads.outputs``; for export); ``anchors_for`` and ``postprocess`` finish the job
    outside the exported graph.
    """

    kind = "detector"
    raw_outputs = DetectorOutputs

    def __init__(
        self,
        backbone: MobileNetV2,
        num_classes: int,
        taps: Sequence[str] = SSDLITE_FEATURES,
        extra_depths: Sequence[int] = EXTRA_DEPTHS,
        anchor_layout: AnchorLayout = "tf",
        min_scale: float = 0.2,
        max_scale: float = 0.95,
        loss: MultiBoxLossOptions = MultiBoxLossOptions(),
        postprocess: PostprocessOptions = PostprocessOptions(),
        score_activation: ScoreActivation = "softmax",
        box_scales: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        image_size: int = 320,
        padding: Padding = "torch",
        class_prior: float | None = None,
        separable: bool = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_prior is not None and not 0.0 < class_prior < 1.0:
            raise ValueError(f"class_prior must be in (0, 1) or None, got {class_prior}")
        self.backbone = backbone
        self.taps = tuple(taps)
        channels = backbone.channels(self.taps)
        extras, in_ch = [], channels[-1]
        for depth in extra_depths:
            extras.append(_extra_layer(in_ch, depth, padding, separable))
            in_ch = depth
        self.extras = nn.ModuleList(extras)
        self.anchor_generator = SSDAnchorGenerator(
            len(channels) + len(extras), min_scale, max_scale, layout=anchor_layout
        )
        self.head = SSDLiteHead(
            [*channels, *extra_depths],
            self.anchor_generator.num_anchors_per_location,
            num_classes,
            separable,
        )
        self.separable = separable
        box_coder = BoxCoder(tuple(box_scales))
        self.loss = MultiBoxLoss(box_coder, loss)
        self.postprocessor = SSDPostprocessor(box_coder, postprocess, score_activation)
        self.num_classes = num_classes
        self.image_size = image_size  # the intended input size (export, benchmarks)
        for module in [*self.extras.modules(), *self.head.modules()]:
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, HEAD_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        if class_prior is not None:
            for predictor in self.head.cls_predictors:
                conv = predictor[-1] if isinstance(predictor, nn.Sequential) else predictor
                # [n * (C + 1)] -> [n, C + 1]: background first at every anchor
                bias = conv.bias.data.view(-1, num_classes + 1)
                bias[:, 1:] = math.log(class_prior / num_classes) - math.log1p(-class_prior)

    def features(self, images: Tensor) -> list[Tensor]:
        """The six maps fed to the head: ``[B, C_k, h_k, w_k]`` (20, 10, 5, 3, 2, 1 at 320)."""
        return self.maps_from_taps(self.backbone(images))

    def maps_from_taps(self, taps: dict[str, Tensor]) -> list[Tensor]:
        """The six head maps from the backbone's output (which holds at least ``taps``)."""
        maps = [taps[name] for name in self.taps]
        for layer in self.extras:
            maps.append(layer(maps[-1]))
        return maps

    def forward_raw(self, images: Tensor) -> DetectorOutputs:
        """``[B, 3, H, W]`` -> ``cls_logits`` ``[B, A, C + 1]``, ``box_deltas`` ``[B, A, 4]``."""
        return DetectorOutputs(*self.head(self.features(images)))

    def graph_constants(self, image_size: Sequence[int]) -> dict[str, Tensor]:
        """``{"anchors": [A, 4]}`` of inputs of ``image_size = (H, W)``."""
        with torch.no_grad():
            return {"anchors": self.anchors_for(image_size, self.feature_sizes(image_size))}

    def postprocess_raw(
        self, raw: DetectorOutputs, image_size: Sequence[int]
    ) -> list[dict[str, Tensor]]:
        """``postprocess`` of ``forward_raw``'s outputs."""
        return self.postprocess(raw.cls_logits, raw.box_deltas, image_size)

    def anchors_for(
        self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]]
    ) -> Tensor:
        """``[A, 4]`` anchors (input pixels) for ``image_size = (H, W)`` and the maps' sizes."""
        return self.anchor_generator(image_size, feature_sizes, device=self._device())

    def feature_sizes(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        """Map sizes for an input size without running the network (every stride-2 layer
        maps ``n`` to ``ceil(n / 2)``); equal to the sizes ``features`` returns."""
        h, w = int(image_size[0]), int(image_size[1])
        sizes = [(_halve(h, s), _halve(w, s)) for s in self.backbone.strides(self.taps)]
        for _ in self.extras:
            ph, pw = sizes[-1]
            sizes.append((-(-ph // 2), -(-pw // 2)))
        return sizes

    def postprocess(
        self, cls_logits: Tensor, box_deltas: Tensor, image_size: Sequence[int]
    ) -> list[dict[str, Tensor]]:
        """Decode + NMS the outputs of ``forward_raw`` for inputs of ``image_size = (H, W)``."""
        anchors = self.anchors_for(image_size, self.feature_sizes(image_size))
        return self.postprocessor(cls_logits, box_deltas, anchors, image_size)

    def forward_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """Raw outputs and the matching anchors (anchors follow the actual map sizes).

        Returns:
            ``cls_logits`` ``[B, A, C + 1]``, ``box_deltas`` ``[B, A, 4]``, ``anchors``
            ``[A, 4]`` (x1, y1, x2, y2, input pixels).
        """
        maps = self.features(images)
        cls_logits, box_deltas = self.head(maps)
        anchors = self.anchors_for(tuple(images.shape[-2:]), [m.shape[-2:] for m in maps])
        return {"cls_logits": cls_logits, "box_deltas": box_deltas, "anchors": anchors}

    def forward(self, images: Tensor) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        outputs = self.forward_outputs(images)
        if self.training:
            return outputs
        return self.postprocessor(
            outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"], images.shape[-2:]
        )

    def compute_loss(
        self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The multibox loss of training-mode ``outputs`` against per-image targets
        (``boxes`` ``[N, 4]`` in input pixels, ``labels`` ``[N]`` in ``0..C-1``)."""
        return self.loss(outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"], targets)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def od_extra_depths(width_mult: float) -> tuple[int, ...]:
    """The extra layers' depths of the Object Detection API's MobileNetV2 feature extractors
    at ``width_mult`` (``feature_map_generators``: ``max(int(depth * width), min_depth)``;
    their 1x1 convs take half, which equals its ``int(depth / 2 * width)`` down to width
    1/8)."""
    return tuple(max(int(d * width_mult), OD_MIN_DEPTH) for d in EXTRA_DEPTHS)


def _halve(n: int, stride: int) -> int:
    while stride > 1:
        n, stride = -(-n // 2), stride // 2
    return n


WEIGHTS = (
    WeightsEntry(
        "ssdlite_mobilenet_v2", "coco_tf",
        TF_DOWNLOAD_URL + "object_detection/ssdlite_mobilenet_v2_coco_2018_05_09.tar.gz", None,
        "tf_tar", 80, {"width_mult": 1.0, "padding": "tf", "score_activation": "sigmoid"},
        (300, 300), **TF_RANGE,
        categories=coco_categories, metric="COCO mAP 22",
        metric_source="TF Object Detection API model zoo (tf1_detection_zoo.md)",
        checked="not on the real file (not obtainable here): every variable of TF's graph "
        "maps once with the right shape, classes and box order (tests/tasks/test_tf_names.py),"
        " a frozen graph written with TF's protos converts (tests/tasks/test_tf_graphdef.py), "
        "and the converted model reproduces the same network built with TF ops within 4e-4 "
        "(tests/tasks/test_tf_checkpoint.py); scores use TF's sigmoid (score_activation)",
        member="frozen_inference_graph.pb",
    ),
)  # fmt: skip


#: the options a detector's weights record (``architecture_of``), of both SSD builders
SSD_ARCHITECTURE = (
    "num_classes",
    *BACKBONE_ARCHITECTURE,
    "anchor_layout",
    "score_activation",
    "image_size",
    "box_scales",
    *POSTPROCESS_OPTIONS,
)


@register_model(
    kind="detector",
    default_size=320,
    weights=WEIGHTS,
    class_predictors=CLASS_PREDICTORS,
    architecture=(*SSD_ARCHITECTURE, "od_api_width"),
)
def ssdlite_mobilenet_v2(
    num_classes: int | None = None,
    width_mult: float = 1.0,
    image_size: int = 320,
    weights_backbone: str | Path | None = None,
    anchor_layout: AnchorLayout = "tf",
    frozen_stages: int = 0,
    postprocess: PostprocessOptions = PostprocessOptions(),
    loss: MultiBoxLossOptions = MultiBoxLossOptions(),
    divisible_by: int = 8,
    padding: Padding = "torch",
    score_activation: ScoreActivation = "softmax",
    box_scales: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    class_prior: float | None = None,
    od_api_width: bool = False,
    weights: str | Path | None = None,
) -> SSDLite:
    """SSDLite with a MobileNetV2 backbone, as in the MobileNetV2 paper.

    Args:
        num_classes: object classes without background (``None``: the weights', else 80).
        width_mult: backbone width multiplier (the extra layers and head keep their depths).
        image_size: the square training/inference size this model is meant for (320). It
            does not fix the graph: anchors follow the input, so other sizes run too.
        weights_backbone: weights whose backbone starts this one: any of
            ``heads.weights_loader`` (an ImageNet name: ``"imagenet"``, ``"imagenet_v2"``,
            ``"imagenet_tf"``, ``"imagenet_tf_8bit"``; a ``mobilezoo convert`` file; a task
            checkpoint of any task; a torchvision state dict). They set ``width_mult``,
            ``divisible_by`` and ``padding`` (an explicit other value is refused).
        anchor_layout: ``"tf"`` (2034 anchors at 320) or ``"torchvision"`` (3234).
        frozen_stages: backbone stages to freeze (see ``backbones.MobileNetV2``).
        postprocess: score threshold, NMS IoU, detections per image, ...: a
            ``heads.PostprocessOptions``, e.g. ``PostprocessOptions(score_threshold=0.3)``.
            A file converted from a TF Lite detection export carries its own
            ``score_threshold``, ``nms_iou``, ``max_detections`` and ``class_agnostic_nms``
            (TF Lite's fast NMS); they apply to each field the caller leaves at its default.
        loss: matching and hard negative mining: a ``heads.MultiBoxLossOptions``, e.g.
            ``MultiBoxLossOptions(min_negatives=3)``.
        divisible_by: backbone channel rounding (see ``backbones.MobileNetV2``).
        padding: ``"torch"`` or ``"tf"`` ("SAME") for the backbone and the extra layers.
        score_activation: ``"softmax"`` or ``"sigmoid"`` class scores (see
            ``SSDPostprocessor``); TF's ``coco_tf`` weights set ``"sigmoid"`` while their class
            predictors are used as they are, and fine-tuning them (another ``num_classes``:
            fresh predictors, trained with the softmax loss) goes back to ``"softmax"``.
        box_scales: the box coder's ``(x, y, w, h)`` scales (see ``BoxCoder``); TF's SSD
            models use the default (10, 10, 5, 5), a converted file sets its own.
        class_prior: initial object probability of fresh class predictors (see
            ``SSDLite``); ``None``: biases start at 0. Predictors loaded from ``weights``
            keep theirs.
        od_api_width: below width 1, narrow as the Object Detection API's SSDLite does
            (``layer_19`` and the extra layers scaled by ``width_mult``, no layer under 16
            channels) rather than keep ``layer_19``'s 1280 channels and the extra layers'
            depths; a file converted from such an export sets it. Same model at width 1.
        weights: trained weights of the whole detector: a name from
            ``heads.pretrained.list_weights("ssdlite_mobilenet_v2")`` (``"coco_tf"``) or a
            file written by ``mobilezoo convert`` / ``torch.save(model.state_dict())`` or a
            task checkpoint. They set the architecture they were trained with
            (``width_mult``, ``padding``, ``anchor_layout``, ...). With another
            ``num_classes`` everything but the class predictors' last convs is loaded
            (fine-tuning; what is skipped is logged). Weights of another model (a
            classifier, a DeepLab) give the backbone only (the joint model: the whole
            detector), with one log line saying what was skipped.

    At 320x320 with 80 classes: 4,337,013 parameters and 0.79 G multiply-adds (paper: 4.3M,
    0.8B).
    """
    return build_ssd(
        "ssdlite_mobilenet_v2",
        num_classes=num_classes,
        width_mult=width_mult,
        image_size=image_size,
        weights_backbone=weights_backbone,
        anchor_layout=anchor_layout,
        frozen_stages=frozen_stages,
        postprocess=postprocess,
        loss=loss,
        divisible_by=divisible_by,
        padding=padding,
        score_activation=score_activation,
        box_scales=box_scales,
        class_prior=class_prior,
        weights=weights,
        od_api_width=od_api_width,
    )


def build_ssd(
    name: str,
    *,
    num_classes: int | None,
    width_mult: float,
    image_size: int,
    weights_backbone: str | Path | None,
    anchor_layout: AnchorLayout,
    frozen_stages: int,
    postprocess: PostprocessOptions,
    loss: MultiBoxLossOptions,
    divisible_by: int,
    padding: Padding,
    score_activation: ScoreActivation,
    box_scales: Sequence[float],
    weights: str | Path | None,
    class_prior: float | None = None,
    separable: bool = True,
    od_api_width: bool = False,
) -> SSDLite:
    """The body of the registered SSD builders ``name``: ``ssdlite_mobilenet_v2``
    (``separable``) and ``ssd_mobilenet_v2``; see their arguments. ``od_api_width``: the
    Object Detection API's width rule (``min_channels`` 16, ``layer_19`` and the extra
    layers scaled by ``width_mult``; ``od_extra_depths``)."""
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    arch = architecture_of(
        name,
        weights,
        weights_backbone,
        num_classes=num_classes,
        width_mult=width_mult,
        divisible_by=divisible_by,
        padding=padding,
        anchor_layout=anchor_layout,
        score_activation=score_activation,
        box_scales=tuple(box_scales),
        od_api_width=od_api_width,
        **{key: getattr(postprocess, key) for key in POSTPROCESS_OPTIONS},
    )
    postprocess = replace(postprocess, **{key: arch[key] for key in POSTPROCESS_OPTIONS})
    width_mult, divisible_by, padding = arch["width_mult"], arch["divisible_by"], arch["padding"]
    anchor_layout, od_api_width = arch["anchor_layout"], arch["od_api_width"]
    num_classes = 80 if arch["num_classes"] is None else arch["num_classes"]
    backbone = MobileNetV2(
        width_mult=width_mult,
        out_features=list(SSDLITE_FEATURES),
        frozen_stages=frozen_stages,
        divisible_by=divisible_by,
        padding=padding,
        min_channels=OD_MIN_DEPTH if od_api_width else MIN_CHANNELS,
        scale_last_conv=od_api_width,
        **SSD_BN,
    )
    if weights_backbone is not None:
        load_backbone_weights(backbone, weights_backbone, name)
    model = SSDLite(
        backbone,
        num_classes,
        anchor_layout=anchor_layout,
        loss=loss,
        postprocess=postprocess,
        score_activation=arch["score_activation"],
        box_scales=arch["box_scales"],
        image_size=image_size,
        padding=padding,
        class_prior=class_prior,
        separable=separable,
        extra_depths=od_extra_depths(width_mult) if od_api_width else EXTRA_DEPTHS,
    )
    if weights is not None:
        skipped = load_weights(model, name, weights)
        if skipped and model.postprocessor.score_activation != score_activation:
            # Fresh class predictors learn with the softmax loss: the weights' activation
            # described their own predictors only.
            model.postprocessor.score_activation = score_activation
    return model
