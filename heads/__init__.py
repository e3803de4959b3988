"""Task heads and the models built from backbone + head.

The model side: ``import heads`` needs torch and torchvision (its ops: NMS, box IoU), never
Lightning or anything of ``tasks``. ``heads.tf_import`` (TF weight import, numpy and the
``tf`` extra) is imported only when a TF file is converted.
"""

from heads.classifier import ClassificationHead, MobileNetV2Classifier, mobilenet_v2_classifier
from heads.deeplabv3 import (
    DeepLabV3Head,
    MobileDeepLabV3,
    deeplabv3_mobilenet_v2,
    multiscale_flip_predict,
    predict_padded,
)
from heads.inference import optimize_for_inference
from heads.joint import SSDLiteDeepLabV3, ssdlite_deeplabv3_mobilenet_v2
from heads.registry import get_model, get_model_builder, list_models, register_model
from heads.ssdlite import SSDLite, SSDLiteHead, ssdlite_mobilenet_v2
from heads.weights_loader import Weights, open_weights

__all__ = [
    "ClassificationHead",
    "DeepLabV3Head",
    "MobileDeepLabV3",
    "MobileNetV2Classifier",
    "SSDLite",
    "SSDLiteDeepLabV3",
    "SSDLiteHead",
    "Weights",
    "deeplabv3_mobilenet_v2",
    "get_model",
    "get_model_builder",
    "list_models",
    "mobilenet_v2_classifier",
    "multiscale_flip_predict",
    "open_weights",
    "optimize_for_inference",
    "predict_padded",
    "register_model",
    "ssdlite_deeplabv3_mobilenet_v2",
    "ssdlite_mobilenet_v2",
]
