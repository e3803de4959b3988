"""8-bit SSDLite and DeepLab TF Lite files, converted and run with the file's activation
rounding (``heads.tf_import.emulate``, paired by ``rounding``), against the TF Lite
runtime's built-in kernels end to end on the test photos.

Without the rounding, a random 8-bit model's output is mostly its rounding noise (DeepLab
argmax on 7-70% of the pixels, SSD box codes ~3 steps off); with it, the runtime's integers
are reproduced: the random fixtures' outputs are equal on most photos (a single flip early
in a random network spreads, so one photo may still differ in part), SSD's codes and
scores everywhere, and the real coral DeepLab agrees on more pixels than without.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from heads import get_model_builder
from tests.tasks.test_tflite_heads import DATA, DEEPLABS, SSD_INT8, SSD_SIZE
from tests.tasks.tf_files import PHOTOS, QUANT_DEEPLAB, need, photo

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
pytest.importorskip("ai_edge_litert", reason="the TF Lite runtime is not installed")
from heads.tf_import.convert import convert_file
from heads.tf_import.verify import compare_detections, compare_with_runtime

INT8_DEEPLABS = sorted(name for name in DEEPLABS if name.endswith("_int8.tflite"))


def _agreements(path: Path, size: int) -> list[float]:
    model, meta = convert_file(path, builders=get_model_builder)
    out = []
    for name in PHOTOS:
        result = compare_with_runtime(path, model, meta["builder"], photo(name, size))
        assert result.quantized and result.emulated
        out.append(float(result.agreement))  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("name", INT8_DEEPLABS)
def test_8bit_deeplab_fixture_equals_the_runtime_with_its_rounding(name: str) -> None:
    """Every pixel's class the runtime's on at least two of the four photos (without the
    rounding: 7-70% on each); no photo below 70%."""
    agreements = _agreements(DATA / name, DEEPLABS[name][3])
    assert sum(a == 1.0 for a in agreements) >= 2, agreements
    assert min(agreements) > 0.7, agreements


@pytest.mark.slow
def test_8bit_coral_deeplab_agrees_with_the_runtime_with_its_rounding() -> None:
    """The real 8-bit DeepLab (uint8, 513x513): >= 99.6% of the pixels on every photo and
    >= 99.7% on average (without the rounding: 99.3-99.9%, 99.6% on average)."""
    agreements = _agreements(need(QUANT_DEEPLAB), 513)
    assert min(agreements) >= 0.996 and float(np.mean(agreements)) >= 0.997, agreements


@pytest.mark.parametrize("name", PHOTOS)
def test_8bit_detection_export_equals_the_runtime_with_its_rounding(name: str) -> None:
    """Box codes and scores equal to the tensors the runtime feeds its post-processing
    (without the rounding: ~3 steps of their grids off), and the same detections in the
    same order (ties of 8-bit scores in index order, as the runtime's sort keeps them)."""
    model, _ = convert_file(SSD_INT8, builders=get_model_builder)
    result = compare_detections(SSD_INT8, model, photo(name, SSD_SIZE))
    assert result.quantized and result.emulated
    assert result.max_difference < 1e-6
    assert result.top1_same


def test_8bit_ssd_export_equals_the_runtime_with_its_rounding() -> None:
    """The non-lite SSD MobileNetV2 export (``ssd_mobilenet_v2``) through the same pairing,
    from ``convert --check``'s entry point: its codes and scores equal the runtime's on
    most photos (on the parrot one early flip spreads through the random network)."""
    path = DATA / "ssd_mobilenet_v2_int8.tflite"
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssd_mobilenet_v2"
    exact = 0
    for name in PHOTOS:
        result = compare_with_runtime(path, model, meta["builder"], photo(name, SSD_SIZE))
        assert result.quantized and result.emulated
        exact += result.max_difference < 1e-6 and bool(result.top1_same)
    assert exact >= 3
