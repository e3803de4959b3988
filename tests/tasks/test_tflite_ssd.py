"""The Object Detection API's (non-lite) SSD MobileNetV2 as a TF Lite detection export
(``TFLite_Detection_PostProcess``): it converts to ``ssd_mobilenet_v2``, builds the documented
way and matches the TF Lite runtime; a detector wired as neither SSD nor SSDLite is refused.

Fixtures (``data/tflite_heads``, ``data/make_tflite_head_fixtures.py``, TF's own converter):
``ssd_mobilenet_v2_{float16,int8}.tflite``, the Object Detection API's ``ssd_mobilenet_v2``
wiring and names at width 0.35 (its width rules: every layer >= 16 channels, ``Conv_1`` 448,
extra layers 1x1 + 3x3 of 179, 89, 89, 44), 1x1 predictors, 3 classes, 160x160, random
weights with calibrated BatchNorm. The SSDLite files' tests (``test_tflite_heads``) lend
their runtime helpers.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from heads import get_model_builder, ssd_mobilenet_v2
from tasks.cli.command import main
from tests.tasks.test_tflite_heads import (
    DATA,
    SSD_SIZE,
    TF_ORDER,
    _image,
    _runtime,
    assert_detections_equal_the_runtime,
)
from tests.tasks.tf_files import PHOTOS, photo

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
from heads.tf_import.convert import convert_file, file_classes, mappings_for, read_variables

SSD_FLOAT = DATA / "ssd_mobilenet_v2_float16.tflite"
SSD_INT8 = DATA / "ssd_mobilenet_v2_int8.tflite"


@pytest.fixture(scope="module")
def ssd_float() -> torch.nn.Module:
    return convert_file(SSD_FLOAT, builders=get_model_builder)[0]


@pytest.mark.parametrize("path", [SSD_FLOAT, SSD_INT8], ids=lambda p: p.name)
def test_ssd_export_converts_to_ssd_with_its_widths_anchors_and_options(path: Path) -> None:
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssd_mobilenet_v2" and not model.separable
    arch = meta["architecture"]
    assert (arch["num_classes"], arch["width_mult"], arch["image_size"]) == (3, 0.35, 160)
    assert (arch["score_threshold"], arch["nms_iou"], arch["max_detections"]) == (0.3, 0.6, 10)
    assert arch["score_activation"] == "sigmoid" and arch["class_agnostic_nms"] is True
    assert model.backbone.channels(["layer_2", "layer_19"]) == [16, 448]
    assert [extra[-1][0].out_channels for extra in model.extras] == [179, 89, 89, 44]


@pytest.mark.parametrize("name", PHOTOS)
def test_float_ssd_raw_outputs_equal_the_runtime(ssd_float, name: str) -> None:
    """Box codes (TF order) within 2e-4 of their largest value, sigmoid scores within 1e-4
    of the tensors the runtime feeds the post-processing op."""
    image = _image(name)
    reference = _runtime(SSD_FLOAT, image)
    with torch.no_grad():
        raw = ssd_float.forward_raw(torch.from_numpy(image).permute(2, 0, 1)[None])
    boxes = raw.box_deltas[0].numpy()[:, TF_ORDER]
    scores = torch.sigmoid(raw.cls_logits[0]).numpy()
    theirs = reference["box_encodings"]
    assert boxes.shape == theirs.shape == (540, 4)
    assert np.abs(boxes - theirs).max() < 2e-4 * np.abs(theirs).max()
    assert np.abs(scores - reference["class_predictions"]).max() < 1e-4


@pytest.mark.parametrize("name", PHOTOS)
def test_float_ssd_detections_equal_the_runtime(ssd_float, name: str) -> None:
    assert_detections_equal_the_runtime(ssd_float, SSD_FLOAT, name, score_atol=1e-4)


@pytest.mark.slow
def test_converted_ssd_builds_the_documented_way(
    ssd_float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mobilezoo convert`` prints ``ssd_mobilenet_v2(weights=...)``, which rebuilds the
    converted model exactly (weights, widths, NMS settings)."""
    output = tmp_path / "ssd.pt"
    main(["convert", str(SSD_FLOAT), "--output", str(output)])
    assert f"ssd_mobilenet_v2(weights={str(output)!r})" in capsys.readouterr().out
    model = ssd_mobilenet_v2(weights=output).eval()
    for key, value in ssd_float.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    post = model.postprocessor.options
    assert (post.score_threshold, post.nms_iou, post.max_detections) == (0.3, 0.6, 10)
    x = torch.from_numpy(_image("cat.bmp")).permute(2, 0, 1)[None]
    with torch.no_grad():
        built, converted = model(x)[0], ssd_float(x)[0]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(built[key], converted[key], rtol=0, atol=0)


def test_8bit_ssd_every_layer_within_one_step_of_the_runtime() -> None:
    """Each conv of the 8-bit file's conversion, fed the runtime's own input to it, is
    within 0.6 of the output's 8-bit step (see ``test_tflite_heads``) on two photos."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from heads.tf_import.layerwise import compare_layers

    model, meta = convert_file(SSD_INT8, builders=get_model_builder)
    variables, layout, _ = read_variables(SSD_INT8)
    mappings = mappings_for(meta["builder"], model, file_classes(variables, layout))
    assert len(mappings) == 52 + 2 * 4 + 2 * 6  # backbone, extra layers, predictors
    for photo_name in PHOTOS[:2]:
        image = photo(photo_name, SSD_SIZE).astype(np.float32) / 127.5 - 1.0
        errors = compare_layers(SSD_INT8, model, mappings, image)
        assert len(errors) == len(mappings) and all(e.step > 0 for e in errors)
        worst = max(errors, key=lambda e: e.steps)
        assert worst.steps < 0.6, (photo_name, worst)


def test_8bit_anchors_are_checked_to_half_their_step(ssd_float) -> None:
    """TF1's quantized exports (Coral's ``ssd_mobilenet_v2_coco_quant_postprocess``) may
    store the anchors in uint8: ours rounded to that grid pass, one anchor two steps off
    is named."""
    from dataclasses import replace

    from heads.tf_import.detection import anchor_tolerance, check_anchors, our_anchors
    from heads.tf_import.tflite import TFLiteTensor

    export = read_variables(SSD_FLOAT)[2]["detection"]
    ours = our_anchors(ssd_float, export.input_size)
    scale = float(ours.max()) / 255
    stored = np.round(ours / scale).astype(np.uint8)

    def as_uint8(q: np.ndarray) -> TFLiteTensor:
        values = (q * scale).astype(np.float32)
        return TFLiteTensor("anchors", q.shape, values, q, np.array([scale]), np.array([0]), 0)

    tensor = as_uint8(stored)
    quantized = replace(export, anchors=tensor.values, anchor_tolerance=anchor_tolerance(tensor))
    assert scale / 4 < check_anchors(ssd_float, quantized, "q.tflite") <= scale / 2 + 1e-6
    off = stored.copy()
    off[450, 2] += 2  # map 2 (3x3), cell (0, 0), anchor 0: h two steps taller
    tensor = as_uint8(off)
    moved = replace(export, anchors=tensor.values, anchor_tolerance=anchor_tolerance(tensor))
    with pytest.raises(ValueError, match=r"anchor 450 \(map 2, cell \(0, 0\), anchor 0"):
        check_anchors(ssd_float, moved, "q.tflite")


def _rewired(tmp_path: Path) -> Path:
    """The float file with map 1's box and class convs reading ``layer_18`` (the input of
    ``Conv_1``) instead of ``layer_19``: a detector on taps neither SSD nor SSDLite has.
    Only the operators' input indices change (bytes of their ``inputs`` vectors)."""
    from heads.tf_import.tflite import TFLiteFile

    convs = TFLiteFile(SSD_FLOAT).convs()
    conv_1 = next(c for c in convs if c.weights.shape[0] == 448)  # MobilenetV2/Conv_1
    predictors = [c for c in convs if c.source == conv_1.output and c.weights.shape[0] == 24]
    assert len(predictors) == 2  # BoxPredictor_1: box and class convs (6 anchors x 4)
    data = SSD_FLOAT.read_bytes()
    tfl = TFLiteFile(SSD_FLOAT)
    for conv in predictors:
        inputs = tfl.op_tensors(conv.index)[0]
        old = struct.pack(f"<{len(inputs) + 1}i", len(inputs), *inputs)
        new = struct.pack(f"<{len(inputs) + 1}i", len(inputs), conv_1.source, *inputs[1:])
        assert data.count(old) == 1
        data = data.replace(old, new)
    bad = tmp_path / "rewired.tflite"
    bad.write_bytes(data)
    return bad


def test_detector_wired_as_neither_ssd_nor_ssdlite_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _rewired(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["convert", str(bad), "--output", str(tmp_path / "out.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert "box predictor 1 reads tensor" in err and "SSD's map 1 is tensor" in err
    assert not (tmp_path / "out.pt").exists()
