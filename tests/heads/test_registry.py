"""The model registry and the torch.hub entry points."""

from pathlib import Path

import pytest
import torch

import heads
from heads import get_model, list_models, register_model

ROOT = Path(__file__).resolve().parents[2]


def test_list_models_names_every_builder() -> None:
    assert list_models() == [
        "deeplabv3_mobilenet_v2",
        "mobilenet_v2",
        "mobilenet_v2_classifier",
        "ssdlite_deeplabv3_mobilenet_v2",
        "ssdlite_mobilenet_v2",
    ]
    assert list_models(include="*mobilenet_v2_*") == ["mobilenet_v2_classifier"]
    assert "mobilenet_v2" not in list_models(exclude="mobilenet_v2")


def test_get_model_builds_with_keyword_arguments() -> None:
    model = get_model("ssdlite_mobilenet_v2", num_classes=3, width_mult=0.5, image_size=128)
    assert isinstance(model, heads.SSDLite)
    assert model.num_classes == 3
    seg = get_model("deeplabv3_mobilenet_v2", num_classes=4, width_mult=0.5).eval()
    assert seg(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)


def test_unknown_model_names_the_closest_one() -> None:
    with pytest.raises(ValueError, match="did you mean 'ssdlite_mobilenet_v2'"):
        get_model("ssdlite_mobilenetv2")


def test_register_model_refuses_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("mobilenet_v2", lambda: torch.nn.Identity())


def test_torch_hub_load_from_a_clone() -> None:
    model = torch.hub.load(
        str(ROOT), "mobilenet_v2_classifier", source="local", num_classes=4, width_mult=0.5
    )
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)
    assert torch.hub.load(str(ROOT), "list_models", source="local") == list_models()
    # every registered builder is a hub entry point, built from the clone
    joint = torch.hub.load(str(ROOT), "ssdlite_deeplabv3_mobilenet_v2", source="local",
                           num_det_classes=2, num_seg_classes=3, width_mult=0.35)  # fmt: skip
    assert isinstance(joint, heads.SSDLiteDeepLabV3)
    hubconf = (ROOT / "hubconf.py").read_text()
    assert all(f'"{name}"' in hubconf.split("__all__")[1] for name in list_models())
