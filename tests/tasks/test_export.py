"""ONNX export: every model kind, parity with PyTorch in onnxruntime, int8, checkpoints."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

from heads.classifier import mobilenet_v2_classifier
from heads.inference import DetectorEnd2End
from tasks.export import (
    export,
    load_model,
    model_kind,
    ort_session,
)


def _calibrate_batchnorm(model: nn.Module, images: torch.Tensor) -> None:
    """Set BatchNorm statistics from one batch, as after training: a freshly initialised
    network collapses to near-constant outputs, which would make every score tie."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        (model.forward_raw if hasattr(model, "forward_raw") else model)(images)
    model.eval()


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOBILEZOO_CACHE", str(tmp_path / "cache"))


def test_classifier_export_parity_dynamic_batch_and_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mobilenet_v2_classifier(num_classes=4, width_mult=0.35)
    _calibrate_batchnorm(model, torch.randn(8, 3, 64, 64))
    result = export(
        model, str(tmp_path), name="cls", image_size=64, int8=True,
        num_calibration_images=4, printer=None,
    )  # fmt: skip
    assert result.kind == "classifier" and result.passed
    assert [p.name for p in result.files] == ["cls.onnx", "cls_int8.onnx"]
    assert result.parity[0].max_abs_diff["logits"] <= 1e-4
    # A batch size that was not traced runs and matches PyTorch.
    x = torch.randn(5, 3, 64, 64)
    (logits,) = ort_session(result.files[0]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=1e-4)
    # int8: smaller file, runs, same output shape.
    assert result.files[1].stat().st_size < 0.6 * result.files[0].stat().st_size
    (q,) = ort_session(result.files[1]).run(None, {"images": x.numpy()})
    assert q.shape == (5, 4) and np.isfinite(q).all()
    assert "[PASS] cls.onnx" in str(result)


def test_segmenter_export_parity() -> None:
    pytest.importorskip("heads.deeplabv3")
    from heads.deeplabv3 import deeplabv3_mobilenet_v2

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, aspp=True)
    _calibrate_batchnorm(model, torch.randn(4, 3, 65, 65))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result = export(model, tmp, name="seg", image_size=65, printer=None)
        assert result.kind == "segmenter" and result.passed
        x = torch.randn(3, 3, 65, 65)
        (logits,) = ort_session(result.files[0]).run(None, {"images": x.numpy()})
    assert logits.shape == (3, 3, 65, 65)
    with torch.no_grad():
        np.testing.assert_allclose(logits, model(x).numpy(), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def detector() -> nn.Module:
    ssdlite = pytest.importorskip("heads.ssdlite")
    torch.manual_seed(0)
    model = ssdlite.ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35, image_size=128)
    _calibrate_batchnorm(model, torch.randn(8, 3, 128, 128))
    return model


def _assert_graph_equals_model(model: nn.Module, images: torch.Tensor) -> None:
    """``DetectorEnd2End``'s batched detections equal the model's per-image ones."""
    graph = DetectorEnd2End(model, tuple(images.shape[-2:]))
    with torch.no_grad():
        expected = model(images)
        boxes, scores, labels, index = graph(images)
    assert (index.diff() >= 0).all()  # grouped by image
    for i, det in enumerate(expected):
        sel = index == i
        assert (
            0 < len(det["scores"]) == int(sel.sum()) <= model.postprocessor.options.max_detections
        )
        torch.testing.assert_close(scores[sel], det["scores"])
        torch.testing.assert_close(labels[sel], det["labels"])
        torch.testing.assert_close(boxes[sel], det["boxes"])


def test_detector_end2end_matches_model_postprocessing(detector: nn.Module) -> None:
    """The batched in-graph post-processing equals the model's per-image one in PyTorch."""
    _assert_graph_equals_model(
        detector, torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    )


def test_detector_end2end_per_class_cap_binds(detector: nn.Module) -> None:
    """With a small ``topk_per_class`` the cap decides which candidates enter NMS: the
    graph's rank-within-class must keep exactly the model's candidates."""
    model = copy.deepcopy(detector)
    model.postprocessor.options = replace(model.postprocessor.options, topk_per_class=7)
    _assert_graph_equals_model(
        model, torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    )


def test_detector_end2end_budget_below_the_anchor_count(detector: nn.Module) -> None:
    """With fewer candidates than anchors (320 px: 1000 of 2034) the graph looks only at
    the best anchors' rows: still exactly the model's detections."""
    model = copy.deepcopy(detector)
    # of 330 anchors
    model.postprocessor.options = replace(
        model.postprocessor.options, topk_candidates=120, max_detections=60
    )
    _assert_graph_equals_model(
        model, torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    )


def test_rank_within_group_matches_counting() -> None:
    from heads.inference import rank_within_group

    labels = torch.randint(0, 5, (3, 200), generator=torch.Generator().manual_seed(0))
    rank = rank_within_group(labels, 5)
    for b in range(3):
        seen = [0] * 5
        for j, label in enumerate(labels[b].tolist()):
            assert rank[b, j] == seen[label]
            seen[label] += 1


def test_detector_export_raw_and_end2end(detector: nn.Module, tmp_path: Path) -> None:
    result = export(
        detector, str(tmp_path), name="det", image_size=128, num_check_images=3, printer=None
    )
    assert result.kind == "detector" and result.passed
    assert [p.name for p in result.files] == ["det.onnx", "det_end2end.onnx"]
    raw, e2e = result.parity
    assert raw.max_abs_diff["anchors"] == 0.0
    assert e2e.detections is not None and e2e.detections[0] == e2e.detections[1] > 0
    # Raw outputs at another batch size, with the anchors of the model.
    x = torch.randn(2, 3, 128, 128)
    logits, deltas, anchors = ort_session(result.files[0]).run(None, {"images": x.numpy()})
    assert (
        logits.shape[0] == 2 and logits.shape[2] == 4 and deltas.shape == (2, anchors.shape[0], 4)
    )
    with torch.no_grad():
        ref = detector.forward_outputs(x)
    np.testing.assert_allclose(anchors, ref["anchors"].numpy())


def test_checkpoint_roundtrip_and_bad_sources(tmp_path: Path) -> None:
    from tasks.classification import ClassificationTask

    task = ClassificationTask(num_classes=3, width_mult=0.35)
    ckpt = tmp_path / "model.ckpt"
    hparams = dict(task.hparams)
    hparams["_class_path"] = "tasks.classification.ClassificationTask"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams}, ckpt)
    model = load_model(str(ckpt))
    assert model_kind(model) == "classifier"
    torch.testing.assert_close(model.state_dict(), task.model.state_dict())
    # Without a class path the task is recognised from the state dict.
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, ckpt)
    assert model_kind(load_model(str(ckpt))) == "classifier"

    with pytest.raises(ValueError, match="neither a builder name"):
        load_model("resnet50")
    with pytest.raises(ValueError, match="missing.ckpt: no such file"):
        load_model(str(tmp_path / "missing.ckpt"))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt .* cannot be read: not a zip archive"):
        load_model(str(bad))
    torch.save({"hyper_parameters": {}}, bad)
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_model(str(bad))
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "evil.Module"}}, bad)
    with pytest.raises(ValueError, match="evil.Module"):
        load_model(str(bad))
    with pytest.raises(TypeError, match="cannot export a Linear"):
        model_kind(nn.Linear(2, 2))


@pytest.mark.slow
def test_parity_failure_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.export.command as export_module

    model = mobilenet_v2_classifier(num_classes=2, width_mult=0.35)
    real = export_module.export_onnx

    def corrupt(graph, form, path, image_size, opset=17):  # the file gets other weights
        other = mobilenet_v2_classifier(num_classes=2, width_mult=0.35)
        _calibrate_batchnorm(other, torch.randn(4, 3, 32, 32))
        return real(other, form, path, image_size, opset)

    monkeypatch.setattr(export_module, "export_onnx", corrupt)
    _calibrate_batchnorm(model, torch.randn(4, 3, 32, 32))
    with pytest.raises(RuntimeError, match=r"\[FAIL\] m.onnx"):
        export(model, str(tmp_path), name="m", image_size=32, printer=None)


def test_predict_uses_the_fast_path() -> None:
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader

    from heads.inference import InferenceModel
    from tasks.classification import ClassificationTask

    torch.manual_seed(0)
    task = ClassificationTask(num_classes=3, width_mult=0.35)
    _calibrate_batchnorm(task.model, torch.randn(8, 3, 32, 32))
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = torch.softmax(task.model(images), dim=1).topk(3, dim=1)
    seen: list[object] = []

    class _Spy(Callback):
        def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen.append(pl_module.model)

    original = task.model
    trainer = Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[_Spy()]
    )
    (out,) = trainer.predict(task, DataLoader(images, batch_size=4))
    assert isinstance(seen[0], InferenceModel) and seen[0].folded > 0
    assert task.model is original  # the trainable model is back after predict
    torch.testing.assert_close(out["scores"], expected.values, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["labels"], expected.indices)


def test_cli_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.cli.command import main

    args = ["--output_dir", str(tmp_path), "--image_size", "32", "--num_check_images", "2"]
    args += ["--builder_args", "{num_classes: 2, width_mult: 0.35}"]
    main(["export", "mobilenet_v2_classifier", *args])
    stem = "mobilenet_v2_classifier-num_classes2-width_mult0.35"  # the arguments are named
    assert (tmp_path / f"{stem}.onnx").is_file()
    assert f"[PASS] {stem}.onnx" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing.ckpt")])
    assert exit_info.value.code == 2
    assert "missing.ckpt" in capsys.readouterr().err


def test_ort_session_spinning_option(tmp_path: Path) -> None:
    """Benchmarks time several sessions in turn: their threads must not spin-wait."""
    model = mobilenet_v2_classifier(num_classes=3, width_mult=0.35)
    result = export(model, str(tmp_path), name="cls", image_size=32, printer=None)
    key = "session.intra_op.allow_spinning"
    quiet = ort_session(result.files[0], threads=1, spinning=False).get_session_options()
    assert quiet.get_session_config_entry(key) == "0"
    default = ort_session(result.files[0], threads=1).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):
        default.get_session_config_entry(key)  # onnxruntime's default: spinning
