"""Task heads and the pure-torch models built from backbone + head."""

from heads.classifier import ClassificationHead, MobileNetV2Classifier, mobilenet_v2_classifier
from heads.deeplabv3 import (
    DeepLabV3Head,
    MobileDeepLabV3,
    deeplabv3_mobilenet_v2,
    multiscale_flip_predict,
)

__all__ = [
    "ClassificationHead",
    "DeepLabV3Head",
    "MobileDeepLabV3",
    "MobileNetV2Classifier",
    "deeplabv3_mobilenet_v2",
    "mobilenet_v2_classifier",
    "multiscale_flip_predict",
]
