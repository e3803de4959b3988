"""Image classification on MobileNetV2: global pool, dropout, linear."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.layers import Padding
from backbones.mobilenetv2 import MobileNetV2
from backbones.weights import IMAGENET_URLS, load_torchvision_state_dict
from heads.pretrained import architecture_of, is_entry_name, load_weights, read_meta

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
    num_classes: int = 1000,
    width_mult: float = 1.0,
    weights: str | Path | None = None,
    dropout: float = 0.2,
    frozen_stages: int = 0,
    divisible_by: int = 8,
    padding: Padding = "torch",
) -> MobileNetV2Classifier:
    """MobileNetV2 classifier (paper Table 2 + 1280 conv + pool + dropout + linear).

    Args:
        num_classes: number of classes.
        width_mult: width multiplier of the backbone.
        weights: ``None``, ``"imagenet"``, ``"imagenet_v2"`` (torchvision), a TF entry of
            ``heads.pretrained.list_weights("mobilenet_v2_classifier")`` (``"imagenet_tf"``,
            ``"imagenet_tf_8bit"``: they set ``padding="tf"``), a file written by
            ``mobilezoo convert`` or a torchvision state-dict file. The linear layer is
            loaded too when ``num_classes`` matches the file's.
        dropout: dropout before the linear layer (paper: 0.2).
        frozen_stages: see ``MobileNetV2``.
        divisible_by, padding: see ``MobileNetV2``.
    """
    tf_named = is_entry_name("mobilenet_v2_classifier", weights) and weights not in IMAGENET_URLS
    converted = (
        weights is not None
        and not tf_named
        and bool(Path(str(weights)).expanduser().is_file() and read_meta(weights))
    )
    arch = architecture_of(
        "mobilenet_v2_classifier",
        weights if tf_named or converted else None,
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
    model = MobileNetV2Classifier(backbone, num_classes, dropout)
    if tf_named or converted:
        assert weights is not None
        load_weights(model, "mobilenet_v2_classifier", weights, CLASS_PREDICTORS)
    elif weights is not None:
        state = load_torchvision_state_dict(weights, width_mult)
        backbone.load_features_state(state, source=str(weights))
        weight = state.get("classifier.1.weight")
        if weight is not None and tuple(weight.shape) == (num_classes, backbone.channels()[0]):
            model.head.classifier[1].load_state_dict(
                {"weight": weight, "bias": state["classifier.1.bias"]}
            )
    return model
