"""TF Lite detection exports (``TFLite_Detection_PostProcess``) and DeepLab files written by
TF2's converter convert, build through ``builder(weights=file)`` and match the TF Lite
runtime on the test photos.

Fixtures (``data/tflite_heads``, made by ``data/make_tflite_head_fixtures.py`` with TF's own
converter from the Object Detection API's / TF DeepLab's architecture in their names, random
weights): SSDLite-MobileNetV2 width 0.35, 3 classes, 160x160 (float16 weights and int8);
DeepLab Cityscapes (19 classes, width 0.5, output stride 8; float16 weights and int8) and
ADE20K (151 classes, width 1.0, output stride 16; int8).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from heads import (
    PostprocessOptions,
    deeplabv3_mobilenet_v2,
    get_model_builder,
    ssdlite_mobilenet_v2,
)
from tasks.cli.command import main
from tests.tasks.tf_files import PHOTOS, photo

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
from heads.tf_import.convert import convert_file, read_variables

DATA = Path(__file__).parent / "data" / "tflite_heads"
SSD_FLOAT, SSD_INT8 = DATA / "ssdlite_float16.tflite", DATA / "ssdlite_int8.tflite"
SSD_SIZE = 160
#: TF's box code (ty, tx, th, tw) from ours (tx, ty, tw, th)
TF_ORDER = [1, 0, 3, 2]


def _runtime(path: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor the post-processing op reads and writes, from the TF Lite runtime."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from ai_edge_litert.interpreter import Interpreter

    tensors = read_variables(path)[2]["detection"].tensors
    with warnings.catch_warnings():  # "intended for debugging": reading them is the point
        warnings.simplefilter("ignore", UserWarning)
        interpreter = Interpreter(
            model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True
        )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    return {k: interpreter.get_tensor(i)[0] for k, i in tensors.items()}


def _image(name: str) -> np.ndarray:
    return photo(name, SSD_SIZE).astype(np.float32) / 127.5 - 1.0


def assert_detections_equal_the_runtime(
    model: torch.nn.Module, path: Path, name: str, score_atol: float
) -> None:
    """After decoding and NMS on photo ``name``: the runtime's 10 detections, in the same
    order, scores within ``score_atol``, boxes within 1e-3 of the image size (the
    runtime's clipped to the image, as ours are)."""
    image = _image(name)
    reference = _runtime(path, image)
    with torch.no_grad():
        ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0]
    count = int(reference["num_detections"])
    assert count == len(ours["scores"]) == 10
    assert ours["labels"].tolist() == reference["classes"][:count].astype(int).tolist()
    assert np.abs(ours["scores"].numpy() - reference["scores"][:count]).max() < score_atol
    theirs = np.clip(reference["boxes"][:count][:, TF_ORDER], 0.0, 1.0)  # x1, y1, x2, y2
    assert np.abs(ours["boxes"].numpy() / SSD_SIZE - theirs).max() < 1e-3


@pytest.fixture(scope="module")
def ssd_float() -> torch.nn.Module:
    return convert_file(SSD_FLOAT, builders=get_model_builder)[0]


@pytest.mark.parametrize("path", [SSD_FLOAT, SSD_INT8], ids=lambda p: p.name)
def test_detection_export_converts_with_its_anchors_and_options(path: Path) -> None:
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssdlite_mobilenet_v2"
    arch = meta["architecture"]
    assert (arch["num_classes"], arch["width_mult"], arch["image_size"]) == (3, 0.35, 160)
    # the op's flexbuffer options and the LOGISTIC in front of it
    assert arch["box_scales"] == (10.0, 10.0, 5.0, 5.0) and arch["score_activation"] == "sigmoid"
    assert (arch["score_threshold"], arch["nms_iou"], arch["max_detections"]) == (0.3, 0.6, 10)
    assert arch["class_agnostic_nms"] is True
    post = model.postprocessor
    options = post.options
    assert (options.score_threshold, options.nms_iou, options.max_detections) == (0.3, 0.6, 10)
    assert options.class_agnostic_nms and post.score_activation == "sigmoid"


@pytest.mark.parametrize("name", PHOTOS)
def test_float_detection_export_raw_outputs_equal_the_runtime(ssd_float, name: str) -> None:
    """The network's two outputs against the tensors the runtime feeds the post-processing
    op: box encodings (TF order) and sigmoid class scores."""
    image = _image(name)
    reference = _runtime(SSD_FLOAT, image)
    with torch.no_grad():
        raw = ssd_float.forward_raw(torch.from_numpy(image).permute(2, 0, 1)[None])
    boxes = raw.box_deltas[0].numpy()[:, TF_ORDER]
    scores = torch.sigmoid(raw.cls_logits[0]).numpy()
    assert boxes.shape == reference["box_encodings"].shape == (540, 4)
    assert np.abs(boxes - reference["box_encodings"]).max() < 1e-3
    assert np.abs(scores - reference["class_predictions"]).max() < 2e-4


@pytest.mark.parametrize("name", PHOTOS)
def test_float_detection_export_detections_equal_the_runtime(ssd_float, name: str) -> None:
    assert_detections_equal_the_runtime(ssd_float, SSD_FLOAT, name, score_atol=2e-4)


@pytest.mark.slow
def test_converted_detector_builds_with_the_files_options(ssd_float, tmp_path: Path) -> None:
    """``mobilezoo convert`` -> ``ssdlite_mobilenet_v2(weights=file)``: the same model, NMS
    settings included; an explicit option still wins."""
    output = tmp_path / "ssd.pt"
    main(["convert", str(SSD_FLOAT), "--output", str(output)])
    model = ssdlite_mobilenet_v2(weights=output).eval()
    post = model.postprocessor.options
    assert (post.score_threshold, post.nms_iou, post.max_detections) == (0.3, 0.6, 10)
    assert post.class_agnostic_nms and model.backbone.padding == "tf"
    x = torch.from_numpy(_image("cat.bmp")).permute(2, 0, 1)[None]
    with torch.no_grad():
        built, converted = model(x)[0], ssd_float(x)[0]
    for key in ("boxes", "scores", "labels"):
        torch.testing.assert_close(built[key], converted[key], rtol=0, atol=0)
    given = PostprocessOptions(score_threshold=0.5, max_detections=3)
    mine = ssdlite_mobilenet_v2(weights=output, postprocess=given).postprocessor.options
    assert (mine.score_threshold, mine.max_detections, mine.nms_iou) == (0.5, 3, 0.6)


def test_detection_export_with_other_anchors_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Anchors are checked, not trusted: one anchor of map 2 made taller is named."""
    from heads.tf_import.tflite import TFLiteFile

    tfl = TFLiteFile(SSD_FLOAT)
    index = read_variables(SSD_FLOAT)[2]["detection"].tensors["anchors"]
    anchors = tfl.constant(index, tfl.dequantized())
    assert anchors is not None
    data = SSD_FLOAT.read_bytes()
    raw = anchors.raw.copy()
    assert data.count(raw.tobytes()) == 1
    raw[300 + 150, 2] = raw[300 + 150, 2] * 1.5  # map 2 (3x3), cell (0, 0), anchor 0: h
    bad = tmp_path / "other_anchors.tflite"
    bad.write_bytes(data.replace(anchors.raw.tobytes(), raw.tobytes()))
    with pytest.raises(SystemExit) as info:
        main(["convert", str(bad), "--output", str(tmp_path / "out.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert "anchor 450 (map 2, cell (0, 0), anchor 0 of the cell)" in err
    assert "1 of 540 anchors differ" in err


# -- DeepLab ----------------------------------------------------------------------------------
#: file -> (classes, width, output stride, input size)
DEEPLABS = {
    "deeplab_cityscapes_w050_os8_float16.tflite": (19, 0.5, 8, 97),
    "deeplab_cityscapes_w050_os8_int8.tflite": (19, 0.5, 8, 97),
    "deeplab_ade20k_w100_os16_int8.tflite": (151, 1.0, 16, 65),
}


@pytest.mark.parametrize("name", sorted(DEEPLABS))
def test_deeplab_of_other_sizes_converts_and_builds(name: str, tmp_path: Path) -> None:
    classes, width, output_stride, _ = DEEPLABS[name]
    output = tmp_path / "deeplab.pt"
    main(["convert", str(DATA / name), "--output", str(output)])
    model = deeplabv3_mobilenet_v2(weights=output).eval()
    assert (model.num_classes, model.output_stride) == (classes, output_stride)
    assert model.align_corners and model.backbone.width_mult == width


@pytest.mark.parametrize("name", PHOTOS)
def test_float_deeplab_of_other_sizes_equals_the_runtime(name: str, tmp_path: Path) -> None:
    """Logits within 1e-4; the same class on every pixel whose runtime top-2 margin is
    above that (a random 19-class head has near-ties)."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from heads.tf_import.verify import runtime

    path = DATA / "deeplab_cityscapes_w050_os8_float16.tflite"
    model, _ = convert_file(path, builders=get_model_builder)
    image = photo(name, 97).astype(np.float32) / 127.5 - 1.0
    interpreter = runtime(path)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    with torch.no_grad():
        ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    diff = float(np.abs(ours - reference).max())
    assert diff < 1e-4
    top2 = np.sort(reference, axis=-1)[..., -2:]
    clear = top2[..., 1] - top2[..., 0] > 2 * diff
    assert clear.mean() > 0.999
    assert (ours.argmax(-1) == reference.argmax(-1))[clear].all()


# -- 8 bits, layer by layer --------------------------------------------------------------------
#: 8-bit files and their input size. End to end, a random 8-bit model's output is mostly
#: its rounding noise (the runtime against TF's own float model of the same weights: box
#: codes off by 3, DeepLab pixels 13-67% the same), so each layer is checked on the
#: runtime's own input to it (``layerwise``).
EIGHT_BIT = {
    "ssdlite_int8.tflite": 160,
    "deeplab_cityscapes_w050_os8_int8.tflite": 97,
    "deeplab_ade20k_w100_os16_int8.tflite": 65,
}


@pytest.mark.parametrize("name", sorted(EIGHT_BIT))
def test_8bit_files_every_layer_within_one_step_of_the_runtime(name: str) -> None:
    """Each conv of the conversion, fed the runtime's input to it, is within 0.6 of the
    output's 8-bit step (0.5: the runtime's rounding, plus its fixed-point rescaling) on
    two photos; a wrong weight, channel order, padding or dilation is many steps off."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from heads.tf_import.convert import file_classes, mappings_for
    from heads.tf_import.layerwise import compare_layers

    path, size = DATA / name, EIGHT_BIT[name]
    model, meta = convert_file(path, builders=get_model_builder)
    variables, layout, _ = read_variables(path)
    mappings = mappings_for(meta["builder"], model, file_classes(variables, layout))
    for photo_name in PHOTOS[:2]:
        image = photo(photo_name, size).astype(np.float32) / 127.5 - 1.0
        errors = compare_layers(path, model, mappings, image)
        assert len(errors) == len(mappings) and all(e.step > 0 for e in errors)
        worst = max(errors, key=lambda e: e.steps)
        assert worst.steps < 0.6, (photo_name, worst)


def test_layerwise_check_finds_a_wrong_layer() -> None:
    """The same check on a conversion with one channel order swapped fails it."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from heads.tf_import.convert import file_classes, mappings_for
    from heads.tf_import.layerwise import compare_layers

    path = DATA / "deeplab_cityscapes_w050_os8_int8.tflite"
    model, meta = convert_file(path, builders=get_model_builder)
    conv = model.backbone.features[5].conv[2]  # expanded_conv_4/project
    with torch.no_grad():
        conv.weight.copy_(conv.weight[[1, 0, *range(2, conv.out_channels)]])
    variables, layout, _ = read_variables(path)
    mappings = mappings_for(meta["builder"], model, file_classes(variables, layout))
    errors = compare_layers(path, model, mappings, photo("cat.bmp", 97) / 127.5 - 1.0)
    wrong = [e.scope for e in errors if e.steps > 0.6]
    assert wrong == ["MobilenetV2/expanded_conv_4/project"]


def test_convert_check_of_detection_exports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mobilezoo convert --check``: the float file's detections are the runtime's; the
    8-bit file's line adds the layer-by-layer comparison."""
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from tests.tasks.tf_files import TF_WEIGHTS, need

    cat = need(TF_WEIGHTS / "photos" / "cat.bmp")
    for source in (SSD_FLOAT, SSD_INT8):
        main(["convert", str(source), "--output", str(tmp_path / "o.pt"), "--check", str(cat)])
    lines = capsys.readouterr().out.splitlines()
    float_line = next(line for line in lines if line.startswith("ssdlite_float16.tflite"))
    assert "(float) vs TF Lite runtime on cat.bmp: same detections: True" in float_line
    assert float(float_line.split("difference ")[1].split()[0]) < 1e-3
    int8_line = next(line for line in lines if line.startswith("ssdlite_int8.tflite"))
    assert "(8-bit)" in int8_line and "layer by layer on the runtime's own inputs" in int8_line
    assert float(int8_line.split("within ")[1].split()[0]) < 0.6
