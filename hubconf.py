"""``torch.hub`` entry points: ``torch.hub.load("path/to/mobilezoo", "ssdlite_mobilenet_v2",
source="local", num_classes=3)``. The names are those of ``heads.list_models()``."""

dependencies = ["torch", "torchvision"]  # heads use torchvision.ops (NMS, box IoU)

from backbones.mobilenetv2 import mobilenet_v2  # noqa: E402
from heads.classifier import mobilenet_v2_classifier  # noqa: E402
from heads.deeplabv3 import deeplabv3_mobilenet_v2  # noqa: E402
from heads.joint import ssdlite_deeplabv3_mobilenet_v2  # noqa: E402
from heads.registry import get_model, list_models  # noqa: E402
from heads.ssdlite import ssdlite_mobilenet_v2  # noqa: E402

__all__ = [
    "deeplabv3_mobilenet_v2",
    "get_model",
    "list_models",
    "mobilenet_v2",
    "mobilenet_v2_classifier",
    "ssdlite_deeplabv3_mobilenet_v2",
    "ssdlite_mobilenet_v2",
]
