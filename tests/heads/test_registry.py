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
        "ssd_mobilenet_v2",
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


def test_hubconf_exposes_exactly_the_registered_builders() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mobilezoo_hubconf", ROOT / "hubconf.py")
    assert spec is not None and spec.loader is not None
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entry_points = set(hubconf.__all__) - {"get_model", "list_models"}
    assert entry_points == set(list_models())
    for name in entry_points:
        assert getattr(hubconf, name) is heads.get_model_builder(name)


def test_every_builder_is_registered_with_its_kind_size_and_weights() -> None:
    from heads.pretrained import list_weights

    kinds = {name: heads.get_model_spec(name).kind for name in list_models()}
    assert kinds == {
        "mobilenet_v2": "backbone",
        "mobilenet_v2_classifier": "classifier",
        "ssdlite_mobilenet_v2": "detector",
        "ssd_mobilenet_v2": "detector",
        "deeplabv3_mobilenet_v2": "segmenter",
        "ssdlite_deeplabv3_mobilenet_v2": "joint",
    }
    sizes = {name: heads.get_model_spec(name).default_size for name in list_models()}
    assert sizes == {
        "mobilenet_v2": 224,
        "mobilenet_v2_classifier": 224,
        "ssdlite_mobilenet_v2": 320,
        "ssd_mobilenet_v2": 300,
        "deeplabv3_mobilenet_v2": 513,
        "ssdlite_deeplabv3_mobilenet_v2": 320,
    }
    entries = [e for name in list_models() for e in heads.get_model_spec(name).weights]
    assert sorted((e.builder, e.name) for e in entries) == sorted(
        (e.builder, e.name) for e in list_weights()
    )
    assert {e.builder for e in entries} == {
        "mobilenet_v2_classifier",
        "ssdlite_mobilenet_v2",
        "deeplabv3_mobilenet_v2",
    }
    for name in list_models(exclude="mobilenet_v2"):
        spec = heads.get_model_spec(name)
        assert spec.class_predictors and "width_mult" in spec.architecture, name
    assert list_models(kind="joint") == ["ssdlite_deeplabv3_mobilenet_v2"]
    assert heads.builder_of_kind("detector").name == "ssdlite_mobilenet_v2"


_SMALL = {
    "mobilenet_v2": {"width_mult": 0.35},
    "mobilenet_v2_classifier": {"num_classes": 3, "width_mult": 0.35},
    "ssdlite_mobilenet_v2": {"num_classes": 3, "width_mult": 0.35},
    "ssd_mobilenet_v2": {"num_classes": 3, "width_mult": 0.35},
    "deeplabv3_mobilenet_v2": {"num_classes": 3, "width_mult": 0.35},
    "ssdlite_deeplabv3_mobilenet_v2": {
        "num_det_classes": 3,
        "num_seg_classes": 4,
        "width_mult": 0.35,
    },
}


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_a_built_model_knows_its_kind(name: str) -> None:
    assert set(_SMALL) == set(list_models())  # a new builder gets a row here
    model = get_model(name, **_SMALL[name])
    assert model.kind == heads.get_model_spec(name).kind == heads.model_kind(model)
    assert heads.model_kind(heads.optimize_for_inference(model, compiled=False)) == model.kind


def test_model_kind_refuses_a_foreign_module() -> None:
    with pytest.raises(TypeError, match="cannot export a Linear: not a zoo model"):
        heads.model_kind(torch.nn.Linear(2, 2))


def test_register_model_checks_kind_and_size() -> None:
    with pytest.raises(ValueError, match="kind of 'x_test' must be one of .* got 'detection'"):
        register_model("x_test", torch.nn.Identity, kind="detection", default_size=32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="default_size of 'x_test' must be a positive int"):
        register_model("x_test", torch.nn.Identity, kind="classifier", default_size=0)
    assert "x_test" not in list_models()


def test_the_registry_is_the_bottom_of_the_model_side() -> None:
    """``backbones.registry`` imports no builder module (they import it to register)."""
    import subprocess
    import sys

    code = (
        "import sys, backbones.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('heads', 'tasks')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
