"""SSD on MobileNetV2: the Object Detection API's ``ssd_mobilenet_v2`` (``ssd_mobilenet_v2_coco``,
``ssd_mobilenet_v2_quantized_300x300_coco``, Coral's ``ssd_mobilenet_v2_coco_quant_postprocess``).

SSDLite's taps, anchors, box coding, loss and post-processing (``heads.ssdlite.SSDLite`` with
``separable=False``) with SSD's convolutions: each extra layer is a 1x1 conv to half its
depth and a 3x3 stride-2 conv (not depthwise + 1x1), and each box and class predictor is one
1x1 conv with bias (the config's ``convolutional_box_predictor`` with ``kernel_size: 1``, no
``use_depthwise``). Widths follow the Object Detection API (``mobilenet_base`` under its
feature extractor): below width 1, ``layer_19`` and the extra layers narrow with
``width_mult`` and no layer is narrower than 16 channels.
"""

from __future__ import annotations

from pathlib import Path

from backbones.layers import Padding
from backbones.registry import register_model
from heads.anchors import AnchorLayout
from heads.detection_loss import MultiBoxLossOptions
from heads.postprocess import PostprocessOptions, ScoreActivation
from heads.ssdlite import CLASS_PREDICTORS, SSD_ARCHITECTURE, SSDLite, build_ssd


@register_model(
    kind="detector",
    default_size=300,
    class_predictors=CLASS_PREDICTORS,
    architecture=SSD_ARCHITECTURE,
)
def ssd_mobilenet_v2(
    num_classes: int | None = None,
    width_mult: float = 1.0,
    image_size: int = 300,
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
    weights: str | Path | None = None,
) -> SSDLite:
    """SSD with a MobileNetV2 backbone, as the Object Detection API's ``ssd_mobilenet_v2``.

    The arguments are ``heads.ssdlite_mobilenet_v2``'s; they differ in:

    Args:
        width_mult: backbone width multiplier. Below 1, as the Object Detection API builds
            it: ``layer_19`` narrows too (448 channels at 0.35), the extra layers' depths are
            ``int(depth * width_mult)`` (179, 89, 89, 44 at 0.35) and every backbone layer
            has at least 16 channels, so ImageNet weights of widths below 0.75 do not fit.
        image_size: the square size the model is meant for (300, the Object Detection
            API's); anchors follow the actual input.
        weights: a file written by ``mobilezoo convert`` (a TF Lite SSD MobileNetV2
            detection export), ``torch.save(model.state_dict())`` or a task checkpoint;
            they set the architecture they were made with. No named weights are
            registered.

    At 300x300 with 80 classes: 5,902,901 parameters and 0.76 G multiply-adds, 1917 anchors
    (with the Object Detection API's 90 COCO classes: 6,066,431 and 0.77 G).
    """
    return build_ssd(
        "ssd_mobilenet_v2",
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
        separable=False,
        od_api_width=True,
    )
