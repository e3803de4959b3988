"""SSDLite TF Lite exports narrowed by the Object Detection API's own width rule convert to
``ssdlite_mobilenet_v2(od_api_width=True)``, build the documented way and match the runtime.

Below width 1 the OD API's SSDLite scales ``Conv_1`` and the extra layers with the width
and keeps every layer at 16 channels or more; ``ssdlite_mobilenet_v2`` by default keeps
``Conv_1``'s 1280 channels and the extra layers' depths (the paper's model at width 1 either
way). Fixtures (``data/make_tflite_head_fixtures.py ... ssdlite_od``, TF's own converter):
``ssdlite_od_{float16,int8}.tflite``, width 0.35, 3 classes, 160x160, random weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heads import get_model_builder, ssdlite_mobilenet_v2
from tasks.cli.command import main
from tests.tasks.test_tflite_heads import DATA, SSD_SIZE, assert_detections_equal_the_runtime
from tests.tasks.tf_files import PHOTOS, photo

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
from heads.tf_import.convert import convert_file

OD_FLOAT = DATA / "ssdlite_od_float16.tflite"
OD_INT8 = DATA / "ssdlite_od_int8.tflite"


def test_builder_narrows_as_the_od_api_below_width_1() -> None:
    """``od_api_width``: ``layer_19`` 448 channels and extra layers 179, 89, 89, 44 at width
    0.35 (the default keeps 1280 and 512, 256, 256, 128); nothing changes at width 1."""
    od = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35, od_api_width=True)
    plain = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35)
    assert od.backbone.channels(["layer_2", "layer_19"]) == [16, 448]
    assert plain.backbone.channels(["layer_2", "layer_19"]) == [8, 1280]
    assert [extra[-1][0].out_channels for extra in od.extras] == [179, 89, 89, 44]
    assert [extra[-1][0].out_channels for extra in plain.extras] == [512, 256, 256, 128]
    full = [ssdlite_mobilenet_v2(od_api_width=flag) for flag in (False, True)]
    assert sum(p.numel() for p in full[0].parameters()) == 4_337_013
    assert sum(p.numel() for p in full[1].parameters()) == 4_337_013


@pytest.mark.parametrize("path", [OD_FLOAT, OD_INT8], ids=lambda p: p.name)
def test_od_width_export_converts_with_its_widths(path: Path) -> None:
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssdlite_mobilenet_v2" and model.separable
    arch = meta["architecture"]
    assert (arch["width_mult"], arch["od_api_width"], arch["num_classes"]) == (0.35, True, 3)
    assert model.backbone.channels(["layer_2", "layer_19"]) == [16, 448]


@pytest.mark.parametrize("name", PHOTOS)
def test_od_width_exports_equal_the_runtime(name: str) -> None:
    """float16: the runtime's detections; int8, with the file's rounding emulated: the
    runtime's box codes and scores exactly, and its detections."""
    from heads.tf_import.verify import compare_detections

    float_model = convert_file(OD_FLOAT, builders=get_model_builder)[0]
    assert_detections_equal_the_runtime(float_model, OD_FLOAT, name, score_atol=1e-4)
    int8_model = convert_file(OD_INT8, builders=get_model_builder)[0]
    result = compare_detections(OD_INT8, int8_model, photo(name, SSD_SIZE))
    assert result.quantized and result.emulated
    assert result.max_difference < 1e-6 and result.top1_same


def test_converted_od_width_file_builds_the_documented_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The printed ``ssdlite_mobilenet_v2(weights=...)`` rebuilds the converted model
    exactly; the line does not offer its backbone to other builders, which refuse it."""
    output = tmp_path / "od.pt"
    main(["convert", str(OD_FLOAT), "--output", str(output)])
    printed = capsys.readouterr().out
    assert f"ssdlite_mobilenet_v2(weights={str(output)!r})" in printed
    assert "od_api_width=True" in printed and "of any builder" not in printed
    converted = convert_file(OD_FLOAT, builders=get_model_builder)[0]
    model = ssdlite_mobilenet_v2(weights=output).eval()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="does not fit this model"):
        ssdlite_mobilenet_v2(num_classes=2, weights_backbone=output)


def test_a_converted_file_with_a_bad_od_api_width_is_refused(tmp_path: Path) -> None:
    """The recorded option is untrusted metadata: a non-boolean is refused, naming it."""
    output = tmp_path / "od.pt"
    main(["convert", str(OD_FLOAT), "--output", str(output)])
    saved = torch.load(output, weights_only=True)
    saved["mobilezoo"]["architecture"]["od_api_width"] = "yes"
    torch.save(saved, output)
    with pytest.raises(ValueError, match="od_api_width='yes' is invalid"):
        ssdlite_mobilenet_v2(weights=output)
