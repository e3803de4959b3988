"""Every family of MobileNetV2 file converts and matches the runtime that made it.

Fixtures (``data/keras_small``, made by ``data/make_keras_fixtures.py`` from the real Keras
applications and TF Model Garden architectures, width 0.35, 96x96, random weights; and
``data/tflite_heads/slim_dense_*``, a TF-slim classifier fine-tuned with a dense 37-class
head, from ``data/make_tflite_head_fixtures.py``): TF Lite files compared live with the TF
Lite runtime, Keras files with the outputs Keras computed when it wrote them. Float: top-1 equal and logits within 1e-4; 8-bit: top-1 equal with our
activations rounded as the file's (``emulate``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from backbones import mobilenet_v2
from heads import get_model_builder, mobilenet_v2_classifier
from tasks.cli.command import main
from tests.tasks.tf_files import FLOAT_DEEPLAB, PHOTOS, QUANT_CLASSIFIER, TF_WEIGHTS, need, photo

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
from heads.tf_import.convert import _tflite_variables, convert_file, save_converted
from heads.tf_import.families import Layer, canonical_variables
from heads.tf_import.tflite import TFLiteConv, TFLiteFile

DATA = Path(__file__).parent / "data" / "keras_small"
SIZE = 96
#: file -> (builder, outputs, 8-bit)
TFLITE = {
    "keras_convhead_float.tflite": ("mobilenet_v2_classifier", 7, False),
    "keras_float16.tflite": ("mobilenet_v2_classifier", 5, False),  # DEQUANTIZE'd weights
    "keras_int8_channel.tflite": ("mobilenet_v2_classifier", 5, True),
    "keras_int8_tensor.tflite": ("mobilenet_v2_classifier", 5, True),
    "garden_int8.tflite": ("mobilenet_v2_classifier", 6, True),
    # TF-slim names, a dense ``Logits/MatMul`` head without background (the file)
    "../tflite_heads/slim_dense_float16.tflite": ("mobilenet_v2_classifier", 37, False),
    "../tflite_heads/slim_dense_int8.tflite": ("mobilenet_v2_classifier", 37, True),
}
KERAS = {
    "keras3_classifier.h5": "mobilenet_v2_classifier",
    "keras2_classifier.weights.h5": "mobilenet_v2_classifier",
    "keras3_backbone.keras": "mobilenet_v2",
    # a Sequential of the MobileNetV2 (one nested layer), pooling and a dense head
    "keras3_nested.keras": "mobilenet_v2_classifier",
    "keras3_nested.h5": "mobilenet_v2_classifier",
}


def _inputs() -> torch.Tensor:
    """The four test photos as the fixtures' Keras outputs saw them ``[4, 3, 96, 96]``."""
    x = np.stack([photo(p, SIZE) for p in PHOTOS]).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(x).permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", sorted(TFLITE))
def test_tflite_of_every_family_matches_the_runtime(name: str) -> None:
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    from heads.tf_import.verify import compare_with_runtime

    builder, classes, quantized = TFLITE[name]
    model, meta = convert_file(DATA / name, builders=get_model_builder)
    assert meta["builder"] == builder and meta["num_classes"] == classes
    assert meta["architecture"]["width_mult"] == 0.35
    for p in PHOTOS:
        result = compare_with_runtime(DATA / name, model, builder, photo(p, SIZE))
        # 8-bit: our activations rounded as the file's (the float model alone differs from
        # these post-training-quantized random models by their quantization noise)
        assert result.quantized == quantized and result.emulated == quantized
        assert result.top1_same, (name, p, result)
        if not quantized:
            assert result.max_difference < 1e-4, (name, p, result)


@pytest.mark.parametrize("name", sorted(KERAS))
def test_keras_files_match_keras(name: str) -> None:
    pytest.importorskip("h5py", reason="reading Keras files needs h5py (tf extra)")
    model, meta = convert_file(DATA / name, builders=get_model_builder)
    assert meta["builder"] == KERAS[name]
    expected = np.load(DATA / "keras_outputs.npz")[name]
    with torch.no_grad():
        out = model(_inputs())
    rtol = 0.0
    if isinstance(out, dict):  # a backbone: Keras's out_relu is our layer_19
        out = out["layer_19"].permute(0, 2, 3, 1)
        rtol = 1e-4  # features up to 6 (ReLU6): float32 rounding reaches 1e-4 there
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4, rtol=rtol)
    if expected.ndim == 2:
        assert (out.argmax(1).numpy() == expected.argmax(1)).all()


def test_converted_classifier_builds_through_the_builder(tmp_path: Path) -> None:
    reference, meta = convert_file(DATA / "keras_int8_channel.tflite", builders=get_model_builder)
    path = save_converted(reference, meta, tmp_path / "classifier.pt")
    model = mobilenet_v2_classifier(num_classes=meta["num_classes"], weights=path).eval()
    assert model.backbone.padding == "tf" and model.backbone.width_mult == 0.35
    with torch.no_grad():
        torch.testing.assert_close(model(_inputs()), reference(_inputs()))


def test_converted_backbone_builds_through_the_builder(tmp_path: Path) -> None:
    pytest.importorskip("h5py", reason="reading Keras files needs h5py (tf extra)")
    reference, meta = convert_file(DATA / "keras3_backbone.keras", builders=get_model_builder)
    assert meta["builder"] == "mobilenet_v2" and meta["num_classes"] is None
    path = save_converted(reference, meta, tmp_path / "backbone.pt")
    model = mobilenet_v2(weights=path, **meta["architecture"]).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(_inputs())["layer_19"], reference(_inputs())["layer_19"])
    # as weights_backbone of a detector: the file's padding and width follow it
    from heads import ssdlite_mobilenet_v2

    detector = ssdlite_mobilenet_v2(num_classes=2, weights_backbone=str(path))
    assert detector.backbone.padding == "tf" and detector.backbone.width_mult == 0.35
    ours = detector.backbone.state_dict()
    for key, value in reference.state_dict().items():
        if key in ours:
            torch.testing.assert_close(ours[key], value)


def test_batchnorm_left_as_multiply_add_is_refused() -> None:
    convs = TFLiteFile(DATA / "keras_convhead_float.tflite").convs()
    ops = TFLiteFile(DATA / "keras_convhead_float.tflite").op_names()
    assert "MUL" not in ops and ops.count("ADD") == 10
    with pytest.raises(ValueError, match="BatchNorm is not folded"):
        _tflite_variables(convs, DATA / "x.tflite", [*ops, "MUL", "ADD"])


def test_tf_slim_names_with_a_fully_connected_head_convert_by_structure() -> None:
    """A TF-slim MobileNetV2 fine-tuned with a ``Logits/MatMul`` dense head (965 classes):
    its backbone names are TF-slim's but its head is not; placed by position."""
    convs = TFLiteFile(need(QUANT_CLASSIFIER)).convs()
    head = convs[-1]
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((965, head.weights.shape[-1])).astype(np.float32)
    convs[-1] = TFLiteConv(None, "FULLY_CONNECTED", weights, np.zeros(965, np.float32),
                           (1, 1), (1, 1), "Logits/MatMul")  # fmt: skip
    variables = _tflite_variables(convs, QUANT_CLASSIFIER)
    assert variables["MobilenetV2/Logits/Conv2d_1c_1x1/weights"] is weights
    np.testing.assert_array_equal(
        variables["MobilenetV2/expanded_conv_16/project/weights"], convs[-3].weights
    )


def test_a_layer_that_does_not_chain_is_refused_by_name() -> None:
    rng = np.random.default_rng(0)
    layers = []
    previous = 3
    for i in range(52):
        kind = "depthwise" if i in (1, *range(4, 51, 3)) else "conv"
        c_out = previous if kind == "depthwise" else 8
        shape = (3, 3, c_out, 1) if kind == "depthwise" else (1, 1, previous, c_out)
        layers.append(Layer(kind, rng.standard_normal(shape), f"layer{i}"))  # type: ignore[arg-type]
        previous = c_out
    assert len(canonical_variables(layers, "tf", "f.h5")) == 52
    layers[30].weights = rng.standard_normal((1, 1, 5, 8))
    with pytest.raises(ValueError, match=r"f\.h5: layer 'layer30' .* takes 5 channels"):
        canonical_variables(layers, "tf", "f.h5")


def test_unknown_file_gets_one_line_naming_its_tensors_and_the_families(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", str(DATA / "tiny_cnn.tflite"), "--output", str(tmp_path / "o.pt")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiny_cnn.tflite: not a model this converter knows" in err
    assert "Keras applications" in err and "Model Garden" in err and "tiny_" in err


def test_convert_check_prints_the_runtime_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    cat = need(TF_WEIGHTS / "photos" / "cat.bmp")
    source = DATA / "keras_convhead_float.tflite"
    main(["convert", str(source), "--output", str(tmp_path / "o.pt"), "--check", str(cat)])
    out = capsys.readouterr().out
    assert (
        "keras_convhead_float.tflite (float) vs TF Lite runtime on cat.bmp: same top-1: True" in out
    )


def test_unknown_keras_file_gets_the_same_one_line(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="reading Keras files needs h5py (tf extra)")
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:  # a legacy Keras weights file of a two-layer network
        f.attrs["layer_names"] = [b"dense_in", b"dense_out"]
        for name, shape in (("dense_in", (4, 8)), ("dense_out", (8, 2))):
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode()]
            group[f"{name}/kernel:0"] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"other\.h5: not a model this converter knows") as info:
        convert_file(path, builders=get_model_builder)
    message = str(info.value)
    assert "'dense_in'" in message and "Keras applications" in message and "\n" not in message


def test_convert_check_of_a_deeplab_file_reports_pixel_agreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
    bird = need(TF_WEIGHTS / "photos" / "bird_segmentation.bmp")
    source = need(FLOAT_DEEPLAB)
    main(["convert", str(source), "--output", str(tmp_path / "o.pt"), "--check", str(bird)])
    line = capsys.readouterr().out.splitlines()[-1]
    assert "(float) vs TF Lite runtime on bird_segmentation.bmp: pixels of the same class: " in line
    assert float(line.split("same class: ")[1].split("%")[0]) > 99.0
    assert float(line.split("difference ")[1].split()[0]) < 1e-3
