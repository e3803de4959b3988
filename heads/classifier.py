"""Image classification on MobileNetV2: global pool, dropout, linear."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import Padding
from backbones.mobilenetv2 import MobileNetV2
from heads.weights_loader import architecture_of
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

    Forward: ``[B, 3, H, W]`` normalized images -> logits ``[B, num_classes]``.
    """

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
