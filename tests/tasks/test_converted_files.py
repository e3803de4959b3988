"""A converted file, used as ``mobilezoo convert`` says (``builder(weights=file)``), is the
model that was converted: checked on the real TF Lite files against the TF Lite runtime on
the real photos (``../shared/tf-weights``), and through ``tasks.export.load_model``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from heads import deeplabv3_mobilenet_v2, mobilenet_v2_classifier
from heads.pretrained import META_KEY
from tests.tasks.test_tf_import import run_tflite, to_tensor
from tests.tasks.tf_files import FLOAT_DEEPLAB, PHOTOS, QUANT_CLASSIFIER, QUANT_DEEPLAB, need, photo


def convert(source: Path, output: Path) -> str:
    """``mobilezoo convert source --output output``; returns what it printed."""
    from tasks.cli.weights import convert_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        convert_main([str(need(source)), "--output", str(output)])
    return printed.getvalue()


@pytest.fixture(scope="module")
def float_deeplab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("converted") / "deeplab_w050.pt"
    return path, convert(FLOAT_DEEPLAB, path)


def test_convert_prints_every_architecture_option(float_deeplab) -> None:
    path, printed = float_deeplab
    for option in (
        "num_classes=21", "width_mult=0.5", "divisible_by=1", "padding='tf'",
        "output_stride=8", "align_corners=True", "aspp=False",
    ):  # fmt: skip
        assert option in printed, option
    assert f"deeplabv3_mobilenet_v2(weights={str(path)!r})" in printed


def test_float_deeplab_file_equals_the_tflite_runtime(float_deeplab) -> None:
    path, _ = float_deeplab
    model = deeplabv3_mobilenet_v2(weights=path).eval()
    assert model.output_stride == 8 and model.align_corners and model.num_classes == 21
    for name in PHOTOS:
        image = photo(name, 257).astype(np.float32) / 127.5 - 1.0
        reference = run_tflite(FLOAT_DEEPLAB, image)  # [257, 257, 21] logits
        with torch.no_grad():
            ours = model(torch.from_numpy(image).permute(2, 0, 1)[None])[0].permute(1, 2, 0)
        ours = ours.numpy()
        assert (ours.argmax(-1) == reference.argmax(-1)).mean() == 1.0, name
        assert np.abs(ours - reference).max() < 1e-3, name


def test_files_written_before_output_stride_was_recorded_still_build_it(
    float_deeplab, tmp_path: Path
) -> None:
    """Older files kept ``output_stride`` under ``options`` only."""
    path, _ = float_deeplab
    saved = torch.load(path, weights_only=True)
    saved[META_KEY]["architecture"].pop("output_stride")
    saved[META_KEY]["architecture"].pop("num_classes")
    old = tmp_path / "old.pt"
    torch.save(saved, old)
    assert deeplabv3_mobilenet_v2(weights=old).output_stride == 8
    assert deeplabv3_mobilenet_v2(weights=old, output_stride=16).output_stride == 16


def test_export_loads_a_converted_file_as_its_builder_does(float_deeplab) -> None:
    from tasks.export.loading import load_model

    path, _ = float_deeplab
    exported, built = load_model(str(path)), deeplabv3_mobilenet_v2(weights=path).eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), built(x), rtol=0, atol=0)


def test_8bit_classifier_file_same_top1_as_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "classifier.pt"
    printed = convert(QUANT_CLASSIFIER, path)
    assert "num_classes=1000" in printed and "padding='tf'" in printed
    model = mobilenet_v2_classifier(weights=path).eval()
    assert model.backbone.padding == "tf"
    for name in PHOTOS:
        image = photo(name, 224)
        reference = run_tflite(QUANT_CLASSIFIER, image)  # [1001] uint8, index 0 background
        with torch.no_grad():
            ours = model(to_tensor(image, 128.0, 128.0))[0]
        assert int(ours.argmax()) + 1 == int(reference.argmax()), name


def test_8bit_deeplab_file_agrees_with_the_runtime(tmp_path: Path) -> None:
    """Dequantized into float: per-pixel argmax agreement >= 97% on every photo (the
    ``voc_tf_8bit`` entry's documented check)."""
    path = tmp_path / "deeplab_8bit.pt"
    printed = convert(QUANT_DEEPLAB, path)
    assert "output_stride=16" in printed and "align_corners=True" in printed
    model = deeplabv3_mobilenet_v2(weights=path).eval()
    for name in PHOTOS:
        image = photo(name, 513)
        reference = run_tflite(QUANT_DEEPLAB, image)  # [513, 513] argmax
        with torch.no_grad():
            ours = model(to_tensor(image, 128.0, 128.0))[0].argmax(0).numpy()
        agreement = (ours == reference).mean()
        print(f"{name}: argmax agreement with the 8-bit runtime {agreement:.4f}")
        assert agreement >= 0.97, name
