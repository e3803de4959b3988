"""One graph wrapper, one exporter and one parity check serve every registered model kind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")

import heads
from heads.inference import RawGraph
from tasks.export import check_parity, export_onnx, exportable_models, ort_session

_SMALL = {
    "mobilenet_v2_classifier": {"num_classes": 3},
    "ssdlite_mobilenet_v2": {"num_classes": 3},
    "ssd_mobilenet_v2": {"num_classes": 3},
    "deeplabv3_mobilenet_v2": {"num_classes": 3},
    "ssdlite_deeplabv3_mobilenet_v2": {"num_det_classes": 3, "num_seg_classes": 4},
}
#: the exported output names of each kind (files already written carry these)
_NAMES = {
    "classifier": ("logits",),
    "segmenter": ("logits",),
    "detector": ("cls_logits", "box_deltas", "anchors"),
    "joint": ("cls_logits", "box_deltas", "seg_logits", "anchors"),
}


def _settled(model: nn.Module, size: int) -> nn.Module:
    """One training-mode batch gives BatchNorm realistic statistics."""
    model.train()
    with torch.no_grad():
        model.forward_raw(torch.randn(2, 3, size, size))
    return model.eval()


def test_every_exportable_builder_is_covered() -> None:
    assert sorted(exportable_models()) == sorted(_SMALL)
    assert "mobilenet_v2" not in exportable_models()


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_one_exporter_and_parity_check_for_every_kind(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _settled(heads.get_model(name, width_mult=0.35, **_SMALL[name]), 64)
    kind = heads.model_kind(model)
    graph = RawGraph(model, (64, 64))
    assert graph.output_names == _NAMES[kind]
    assert graph.output_names[: len(model.raw_outputs._fields)] == model.raw_outputs._fields
    form = "raw" if kind == "detector" else kind
    path = export_onnx(graph, form, tmp_path / f"{name}.onnx", (64, 64))
    images = torch.randn(3, 3, 64, 64)  # another batch size than the traced one
    report = check_parity(path, graph, form, images)
    assert report.passed, str(report)
    assert set(report.max_abs_diff) == set(_NAMES[kind])
    session = ort_session(path)
    assert [o.name for o in session.get_outputs()] == list(_NAMES[kind])


def test_parity_check_catches_a_joint_file_of_other_weights(tmp_path: Path) -> None:
    """The same check that passes the joint model fails a file of another one."""
    torch.manual_seed(0)
    args = {"width_mult": 0.35, **_SMALL["ssdlite_deeplabv3_mobilenet_v2"]}
    model = _settled(heads.get_model("ssdlite_deeplabv3_mobilenet_v2", **args), 64)
    other = _settled(heads.get_model("ssdlite_deeplabv3_mobilenet_v2", **args), 64)
    path = export_onnx(RawGraph(other, (64, 64)), "joint", tmp_path / "other.onnx", (64, 64))
    report = check_parity(path, RawGraph(model, (64, 64)), "joint", torch.randn(2, 3, 64, 64))
    assert not report.passed
    assert report.max_abs_diff["anchors"] == 0.0 and report.max_abs_diff["seg_logits"] > 1e-3
