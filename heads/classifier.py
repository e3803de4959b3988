"""Image classification on MobileNetV2: global pool, dropout, linear."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import Padding
from backbones.mobilenetv2 import MobileNetV2
from backbones.registry import register_model
from heads.categories import imagenet_categories
from heads.outputs import ClassifierOutputs
from heads.pretrained import (
    CORAL_URL,
    TF_RANGE,
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    WeightsEntry,
)
from heads.weights_loader import BACKBONE_ARCHITECTURE, architecture_of
from heads.weights_transfer import load_backbone_weights, load_weights

#: state-dict prefixes of the class-dependent layers (re-initialized when fine-tuning)
CLASS_PREDICTORS = ("head.classifier.1.",)


class ClassificationHead(nn.Module):
    """Global average pool -> dropout -> linear.

    ``[B, C, H, W] -> [B, num_classes]``. ``self.classifier`` mirrors torchvision's
    ``classifier`` (index 1 is the linear layer) so its weights load unchanged.
    """

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_channels, num_classes))
        # torchvision / TF-slim initialisation of the last layer.
        nn.init.normal_(self.classifier[1].weight, 0, 0.01)
        nn.init.zeros_(self.classifier[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class MobileNetV2Classifier(nn.Module):
    """MobileNetV2 image classifier.

    Forward: ``[B, 3, H, W]`` normalized images -> logits ``[B, num_classes]``;
    ``forward_raw`` returns them as ``ClassifierOutputs`` (``heads.outputs``).
    """

    kind = "classifier"
    raw_outputs = ClassifierOutputs

    def __init__(self, backbone: MobileNetV2, num_classes: int, dropout: float = 0.2) -> None:
        super().__init__()
        if len(backbone.out_features) != 1:
            raise ValueError(f"the classifier needs one feature map, got {backbone.out_features}")
        self.backbone = backbone
        self.feature = backbone.out_features[0]
        self.head = ClassificationHead(backbone.channels()[0], num_classes, dropout)
        self.num_classes = num_classes

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images)[self.feature])

    def forward_raw(self, images: Tensor) -> ClassifierOutputs:
        """``[B, 3, H, W]`` -> ``logits [B, num_classes]``."""
        return ClassifierOutputs(self(images))

    def graph_constants(self, image_size: Sequence[int]) -> dict[str, Tensor]:
        return {}

    def postprocess_raw(self, raw: ClassifierOutputs, image_size: Sequence[int]) -> Tensor:
        """The logits (what ``forward`` returns)."""
        return raw.logits


WEIGHTS = (
    WeightsEntry(
        "mobilenet_v2_classifier", "imagenet",
        "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth", None, "torchvision",
        1000, {}, (224, 224), TORCHVISION_MEAN, TORCHVISION_STD, imagenet_categories,
        "ImageNet val top-1 71.878", "torchvision MobileNet_V2_Weights.IMAGENET1K_V1",
        "torchvision's own file, loaded unchanged",
    ),
    WeightsEntry(
        "mobilenet_v2_classifier", "imagenet_v2",
        "https://download.pytorch.org/models/mobilenet_v2-7ebf99e0.pth", None, "torchvision",
        1000, {}, (224, 224), TORCHVISION_MEAN, TORCHVISION_STD, imagenet_categories,
        "ImageNet val top-1 72.154", "torchvision MobileNet_V2_Weights.IMAGENET1K_V2",
        "torchvision's own file, loaded unchanged",
    ),
    WeightsEntry(
        "mobilenet_v2_classifier", "imagenet_tf",
        "https://storage.googleapis.com/mobilenet_v2/checkpoints/mobilenet_v2_1.0_224.tgz",
        None, "tflite_in_tar", 1000, {"width_mult": 1.0, "padding": "tf"}, (224, 224),
        **TF_RANGE, categories=imagenet_categories,
        metric="ImageNet val top-1 71.8",
        metric_source="TF-slim MobileNetV2 table (research/slim/nets/mobilenet/README.md)",
        checked="not on this float file (not obtainable here); the same reader and mapping "
        "are checked against the TFLite runtime on the 8-bit file (imagenet_tf_8bit)",
        member="mobilenet_v2_1.0_224.tflite",
    ),
    WeightsEntry(
        "mobilenet_v2_classifier", "imagenet_tf_8bit",
        CORAL_URL + "mobilenet_v2_1.0_224_quant.tflite",
        "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776", "tflite",
        1000, {"width_mult": 1.0, "padding": "tf"}, (224, 224), 128.0, 128.0,
        imagenet_categories, "ImageNet val top-1 70.8 (8-bit; float parent 71.8)",
        "TF-slim MobileNetV2 table (quantized row)",
        "tests/tasks/test_tf_import.py: dequantized into the float model, same top-1 as the "
        "8-bit TFLite runtime on every test photo",
    ),
)  # fmt: skip


@register_model(
    kind="classifier",
    default_size=224,
    weights=WEIGHTS,
    class_predictors=CLASS_PREDICTORS,
    architecture=("num_classes", *BACKBONE_ARCHITECTURE),
)
def mobilenet_v2_classifier(
    num_classes: int | None = None,
    width_mult: float = 1.0,
    weights: str | Path | None = None,
    dropout: float = 0.2,
    frozen_stages: int = 0,
    divisible_by: int = 8,
    padding: Padding = "torch",
    weights_backbone: str | Path | None = None,
) -> MobileNetV2Classifier:
    """MobileNetV2 classifier (paper Table 2 + 1280 conv + pool + dropout + linear).

    Args:
        num_classes: number of classes (``None``: the weights', else 1000).
        width_mult: width multiplier of the backbone.
        weights: any weights of ``heads.weights_loader``: a name of
            ``heads.pretrained.list_weights()`` (``"imagenet"``, ``"imagenet_v2"``,
            ``"imagenet_tf"``, ``"imagenet_tf_8bit"``: the TF ones set ``padding="tf"``), a
            ``mobilezoo convert`` file, a task checkpoint, a state dict (torchvision's
            too). The linear layer is loaded when ``num_classes`` matches the weights';
            weights of another model (a detector, a segmenter) give the backbone only.
        dropout: dropout before the linear layer (paper: 0.2).
        frozen_stages: see ``MobileNetV2``.
        divisible_by, padding: see ``MobileNetV2``; weights that need other values set
            them (an explicit other value is refused).
        weights_backbone: the same kinds of weights, of which only the backbone is loaded.
    """
    arch = architecture_of(
        "mobilenet_v2_classifier",
        weights,
        weights_backbone,
        num_classes=num_classes,
        width_mult=width_mult,
        divisible_by=divisible_by,
        padding=padding,
    )
    backbone = MobileNetV2(
        width_mult=arch["width_mult"],
        out_features=["layer_19"],
        frozen_stages=frozen_stages,
        divisible_by=arch["divisible_by"],
        padding=arch["padding"],
    )
    num_classes = 1000 if arch["num_classes"] is None else arch["num_classes"]
    model = MobileNetV2Classifier(backbone, num_classes, dropout)
    if weights_backbone is not None:
        load_backbone_weights(backbone, weights_backbone, "mobilenet_v2_classifier")
    if weights is not None:
        load_weights(model, "mobilenet_v2_classifier", weights)
    return model
