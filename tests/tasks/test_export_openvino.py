"""OpenVINO export (every model kind, parity, dynamic batch, NNCF int8) and running exported
files with the PyTorch model's call."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from heads.classifier import mobilenet_v2_classifier
from tasks.export import export, load_exported


def _calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """BatchNorm statistics from one batch, so outputs are not near-constant."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        (model.forward_raw if hasattr(model, "forward_raw") else model)(images)
    model.eval()


def test_classifier_openvino_parity_dynamic_batch_and_int8(tmp_path: Path) -> None:
    pytest.importorskip("nncf")
    torch.manual_seed(0)
    model = mobilenet_v2_classifier(num_classes=4, width_mult=0.35)
    _calibrate_batchnorm(model, torch.randn(8, 3, 64, 64))
    result = export(
        model, str(tmp_path), name="cls", image_size=64, format="openvino", int8=True,
        num_calibration_images=4, printer=None,
    )  # fmt: skip
    assert [p.name for p in result.files] == ["cls.onnx", "cls.xml", "cls_int8.xml"]
    assert [r.runtime for r in result.parity] == ["onnxruntime", "openvino"]
    assert result.passed and result.parity[1].max_abs_diff["logits"] <= 1e-4
    assert "[PASS] cls.xml" in str(result)
    # An untraced batch size, through the helper that mimics the PyTorch call.
    x = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
    for name in ("cls.xml", "cls.onnx"):
        torch.testing.assert_close(
            load_exported(tmp_path / name)(x), expected, atol=1e-4, rtol=1e-4
        )
    q = load_exported(tmp_path / "cls_int8.xml")(x)
    assert q.shape == (5, 4) and torch.isfinite(q).all()
    assert (tmp_path / "cls_int8.bin").stat().st_size < 0.6 * (tmp_path / "cls.bin").stat().st_size


def test_segmenter_openvino_parity(tmp_path: Path) -> None:
    from heads.deeplabv3 import deeplabv3_mobilenet_v2

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, width_mult=0.35)
    _calibrate_batchnorm(model, torch.randn(4, 3, 65, 65))
    result = export(
        model, str(tmp_path), name="seg", image_size=65, format="openvino", num_check_images=2,
        printer=None,
    )  # fmt: skip
    assert result.passed and result.parity[1].runtime == "openvino"
    x = torch.randn(3, 3, 65, 65)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(
        load_exported(tmp_path / "seg.xml")(x), expected, atol=1e-4, rtol=1e-4
    )


def test_detector_openvino_raw_and_end2end_like_the_model(tmp_path: Path) -> None:
    from heads.ssdlite import ssdlite_mobilenet_v2

    torch.manual_seed(0)
    model = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35, image_size=128)
    # of 330 anchors: the graph prunes by anchor
    model.postprocessor.options = replace(model.postprocessor.options, topk_candidates=150)
    _calibrate_batchnorm(model, torch.randn(8, 3, 128, 128))
    result = export(
        model, str(tmp_path), name="det", image_size=128, format="openvino",
        num_check_images=2, printer=None,
    )  # fmt: skip
    names = [p.name for p in result.files]
    assert names == ["det.onnx", "det.xml", "det_end2end.onnx", "det_end2end.xml"]
    assert result.passed and [r.runtime for r in result.parity][-1] == "openvino"
    x = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x)
        raw = model.forward_outputs(x)
    for name in ("det_end2end.xml", "det_end2end.onnx"):
        got = load_exported(tmp_path / name)(x)
        assert len(got) == 3
        for det, ref in zip(got, expected, strict=True):
            assert len(ref["scores"]) > 0
            torch.testing.assert_close(det["scores"], ref["scores"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(det["labels"], ref["labels"])
            torch.testing.assert_close(det["boxes"], ref["boxes"], atol=1e-3, rtol=1e-4)
    got = load_exported(tmp_path / "det.xml")(x)
    # This one-batch-calibrated network is itself 1.2e-4 away from its float64 result on
    # these images: allow fp32 rounding of that size.
    for key in ("cls_logits", "box_deltas", "anchors"):
        torch.testing.assert_close(got[key], raw[key], atol=5e-4, rtol=1e-4)


def test_openvino_runner_compiles_each_input_shape_static(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenVINO runs static shapes faster: the runner compiles the dynamic-batch IR once
    per input shape, up to ``MAX_STATIC_SHAPES``, then runs the dynamic model."""
    import openvino as ov

    from tasks.export import openvino as ov_export

    torch.manual_seed(0)
    model = mobilenet_v2_classifier(num_classes=4, width_mult=0.35).eval()
    export(model, str(tmp_path), name="cls", image_size=64, format="openvino", printer=None)
    monkeypatch.setattr(ov_export, "MAX_STATIC_SHAPES", 2)
    runner = ov_export.OpenVINORunner(tmp_path / "cls.xml")
    assert runner.output_names == ["logits"]
    shapes = [(b, 3, 64, 64) for b in (1, 2, 3)]
    compiled = [runner.compiled_for(s) for s in shapes]
    assert [c.input(0).get_partial_shape() for c in compiled] == [
        ov.PartialShape([1, 3, 64, 64]), ov.PartialShape([2, 3, 64, 64]),
        ov.PartialShape([-1, 3, 64, 64]),  # past the cap: the file's dynamic batch
    ]  # fmt: skip
    assert runner.compiled_for(shapes[0]) is compiled[0]  # compiled once
    for b in (1, 3):
        x = torch.randn(b, 3, 64, 64)
        with torch.no_grad():
            expected = model(x).numpy()
        (got,) = runner(x.numpy())
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    runner(torch.randn(3, 3, 64, 64).numpy())  # the next call leaves returned arrays alone
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # A wrong shape is named before anything is compiled (a fresh runner: an exception's
    # traceback would keep this one's compiled models alive past the test).
    with pytest.raises(ValueError, match=r"cls.xml takes inputs of shape \[\?,3,64,64\]"):
        ov_export.OpenVINORunner(tmp_path / "cls.xml").compiled_for((1, 3, 96, 96))
    # A damaged file (weights cut short) is named, with OpenVINO's reason.
    bin_path = tmp_path / "cls.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cls.xml: not a readable OpenVINO model \(Incorrect"):
        ov_export.OpenVINORunner(tmp_path / "cls.xml")


def test_bad_format_and_runtime_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be 'onnx' or 'openvino', got 'tflite'"):
        export("mobilenet_v2_classifier", str(tmp_path), format="tflite")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        load_exported(tmp_path / "missing.xml")
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(ValueError, match="onnxruntime runs .onnx files, got m.xml"):
        load_exported(tmp_path / "m.xml", runtime="onnxruntime")
