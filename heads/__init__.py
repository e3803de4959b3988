"""Task heads and the models built from backbone + head.

The model side: ``import heads`` needs torch and torchvision (its ops: NMS, box IoU), never
Lightning or anything of ``tasks``. ``heads.tf_import`` (TF weight import, numpy and the
``tf`` extra) is imported only when a TF file is converted.

Importing ``heads`` imports every builder, each of which registers itself
(``backbones.registry``): ``list_models()`` then names them all.
"""

from backbones.registry import (
    ModelSpec,
    builder_of_kind,
    get_model,
    get_model_builder,
    get_model_spec,
    list_models,
    model_kind,
    register_model,
)
from heads.classifier import ClassificationHead, MobileNetV2Classifier, mobilenet_v2_classifier
from heads.deeplabv3 import (
    DeepLabV3Head,
    MobileDeepLabV3,
    deeplabv3_mobilenet_v2,
    multiscale_flip_predict,
    predict_padded,
)
from heads.detection_loss import MultiBoxLossOptions
from heads.inference import optimize_for_inference
from heads.joint import SSDLiteDeepLabV3, ssdlite_deeplabv3_mobilenet_v2
from heads.postprocess import PostprocessOptions
from heads.ssd import ssd_mobilenet_v2
from heads.ssdlite import SSDLite, SSDLiteHead, ssdlite_mobilenet_v2
from heads.weights_loader import Weights, open_weights

__all__ = [
    "ClassificationHead",
    "DeepLabV3Head",
    "MobileDeepLabV3",
    "MobileNetV2Classifier",
    "ModelSpec",
    "MultiBoxLossOptions",
    "PostprocessOptions",
    "SSDLite",
    "SSDLiteDeepLabV3",
    "SSDLiteHead",
    "Weights",
    "builder_of_kind",
    "deeplabv3_mobilenet_v2",
    "get_model",
    "get_model_builder",
    "get_model_spec",
    "list_models",
    "mobilenet_v2_classifier",
    "model_kind",
    "multiscale_flip_predict",
    "open_weights",
    "optimize_for_inference",
    "predict_padded",
    "register_model",
    "ssd_mobilenet_v2",
    "ssdlite_deeplabv3_mobilenet_v2",
    "ssdlite_mobilenet_v2",
]
