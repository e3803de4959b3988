"""Task heads and the pure-torch models built from backbone + head."""

from heads.classifier import ClassificationHead, MobileNetV2Classifier, mobilenet_v2_classifier

__all__ = ["ClassificationHead", "MobileNetV2Classifier", "mobilenet_v2_classifier"]
