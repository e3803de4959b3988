"""ONNX export of the joint model through the one exporter: both outputs, parity with PyTorch
in onnxruntime."""

from __future__ import annotations

import pytest
import torch

from heads.inference import RawGraph
from heads.joint import ssdlite_deeplabv3_mobilenet_v2
from tasks.export import check_parity, export_onnx

pytest.importorskip("onnxruntime")

JOINT_OUTPUTS = ("cls_logits", "box_deltas", "seg_logits", "anchors")


def export_joint(model, path, size):
    return export_onnx(RawGraph(model, size), "joint", path, size)


def check_joint_parity(path, model, images):
    return check_parity(path, RawGraph(model, tuple(images.shape[-2:])), "joint", images)


def _settled(model: torch.nn.Module, size: int) -> torch.nn.Module:
    """One training-mode batch gives BatchNorm realistic statistics (no denormals)."""
    model.train()
    with torch.no_grad():
        model.forward_raw(torch.randn(2, 3, size, size))
    return model.eval()


def test_export_both_outputs_and_parity(tmp_path):
    torch.manual_seed(0)
    model = _settled(ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35), 96)
    path = export_joint(model, tmp_path / "joint.onnx", (96, 96))
    images = torch.randn(3, 3, 96, 96)  # another batch size than the traced one
    report = check_joint_parity(path, model, images)
    assert report.passed, str(report)
    assert set(report.max_abs_diff) == set(JOINT_OUTPUTS)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = [list(o.shape) for o in session.run(None, {"images": images.numpy()})]
    anchors = model.anchor_generator.num_anchors(model.feature_sizes((96, 96)))
    assert shapes == [[3, anchors, 4], [3, anchors, 4], [3, 4, 96, 96], [anchors, 4]]


def test_only_zoo_models_are_accepted():
    """The one graph wrapper takes every kind of zoo model, nothing else."""
    with pytest.raises(TypeError, match="RawGraph wraps a zoo model .* got a Linear"):
        RawGraph(torch.nn.Linear(2, 2), (64, 64))
    assert (
        RawGraph(ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35), (64, 64)).output_names
        == JOINT_OUTPUTS
    )


def test_mobilezoo_export_of_a_joint_checkpoint(tmp_path):
    from tasks import MultiTaskTask
    from tasks.export import export

    torch.manual_seed(0)
    task = MultiTaskTask(num_det_classes=3, num_seg_classes=4, width_mult=0.35, image_size=96)
    _settled(task.model, 96)
    ckpt = tmp_path / "joint.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": {
        "_class_path": "tasks.MultiTaskTask", **task.hparams}}, ckpt)  # fmt: skip
    result = export(str(ckpt), output_dir=str(tmp_path / "out"), printer=None)
    assert result.kind == "joint" and result.passed
    assert [f.suffix for f in result.files] == [".onnx"]
    with pytest.raises(ValueError, match="fp32 only"):
        export(str(ckpt), output_dir=str(tmp_path / "out"), int8=True, printer=None)
    pytest.importorskip("openvino")
    result = export(str(ckpt), output_dir=str(tmp_path / "ov"), format="openvino", printer=None)
    assert [f.suffix for f in result.files] == [".onnx", ".xml"] and result.passed
    assert [r.runtime for r in result.parity] == ["onnxruntime", "openvino"]
    from tasks.export import load_exported

    images = torch.randn(2, 3, 96, 96)
    out = load_exported(result.files[1])(images)
    with torch.no_grad():
        ref = RawGraph(task.model, (96, 96)).eval()(images)
    for name, expected in zip(JOINT_OUTPUTS, ref, strict=True):
        torch.testing.assert_close(out[name], expected, rtol=1e-4, atol=1e-4)


def test_export_refuses_a_checkpoint_naming_a_foreign_class(tmp_path):
    import sys

    from tasks.checkpoints.io import CheckpointError
    from tasks.export import export

    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "evil_mod_q.Task"}}, ckpt)
    with pytest.raises(CheckpointError, match="names the class 'evil_mod_q.Task'"):
        export(str(ckpt), output_dir=str(tmp_path / "out"), printer=None)
    assert "evil_mod_q" not in sys.modules
