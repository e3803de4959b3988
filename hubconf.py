"""``torch.hub`` entry points: ``torch.hub.load("path/to/mobilezoo", "ssdlite_mobilenet_v2",
source="local", num_classes=3)``. The entry points are exactly ``heads.list_models()``."""

dependencies = ["torch", "torchvision"]  # heads use torchvision.ops (NMS, box IoU)

from backbones.mobilenetv2 import mobilenet_v2  # noqa: E402
from heads import (  # noqa: E402
    deeplabv3_mobilenet_v2,
    get_model,
    list_models,
    mobilenet_v2_classifier,
    ssd_mobilenet_v2,
    ssdlite_deeplabv3_mobilenet_v2,
    ssdlite_mobilenet_v2,
)

__all__ = [
    "deeplabv3_mobilenet_v2",
    "get_model",
    "list_models",
    "mobilenet_v2",
    "mobilenet_v2_classifier",
    "ssd_mobilenet_v2",
    "ssdlite_deeplabv3_mobilenet_v2",
    "ssdlite_mobilenet_v2",
]
