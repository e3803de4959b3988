"""The suite's export-parity section: one row per exported file, failures reported as rows."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from benchmarks import export_parity
from benchmarks.latency import OPENVINO

TINY = ("tiny classifier", "mobilenet_v2_classifier", {"num_classes": 5, "width_mult": 0.35}, 32)


def test_every_file_and_runtime_gets_a_passing_row() -> None:
    rows = export_parity.parity_rows([TINY])
    runtimes = ["onnxruntime", "openvino"] if OPENVINO else ["onnxruntime"]
    assert [row[3] for row in rows] == runtimes
    assert all(row[-1] == "PASS" and row[2].startswith("model.") for row in rows)
    assert all(len(row) == len(export_parity.HEADER) for row in rows)


def test_a_failed_check_is_a_fail_row(monkeypatch: pytest.MonkeyPatch) -> None:
    def disagree(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the runtime disagrees with PyTorch: [FAIL] model.onnx")

    monkeypatch.setattr(export_parity, "export", disagree)
    (row,) = export_parity.parity_rows([TINY])
    assert row[-1].startswith("FAIL") and "model.onnx" in row[-1]


def test_sources_are_the_builders_then_the_checkpoints() -> None:
    rows = export_parity.sources({"detector": "/runs/det/last.ckpt"}, quick=True)
    assert [r[1] for r in rows] == [
        "mobilenet_v2_classifier", "ssdlite_mobilenet_v2", "deeplabv3_mobilenet_v2",
        "/runs/det/last.ckpt",
    ]  # fmt: skip
    assert rows[-1][3] is None and all(r[3] == 64 for r in rows[:3])
