"""8-bit SSDLite, SSD and DeepLab TF Lite files, converted and run with the file's
activation rounding (``heads.tf_import.emulate``, paired by ``rounding``), against the TF
Lite runtime's built-in kernels end to end on the test photos.

Without the rounding, a random 8-bit model's output is mostly its rounding noise (DeepLab
argmax on 7-70% of the pixels, SSD box codes ~3 steps off); with it, the runtime's integers
are reproduced on every photo: every pixel's class of the random and the real (coral)
DeepLabs, SSD's codes and scores. A single rounding flip early in a random network spreads
(before the ``QUANTIZE`` tail and the bias step below, the bird photo kept 72% of the
pixels and the parrot's SSD codes differed), so these tests pin every kernel rule.
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
    """Every pixel's class the runtime's on every photo (without the rounding: 7-70%)."""
    agreements = _agreements(DATA / name, DEEPLABS[name][3])
    assert agreements == [1.0] * len(PHOTOS), agreements


@pytest.mark.slow
def test_8bit_coral_deeplab_equals_the_runtime_with_its_rounding() -> None:
    """The real 8-bit DeepLab (uint8 per tensor, 513x513): every pixel on every photo
    (without the rounding: 99.3-99.9%; before its image pooling's ``QUANTIZE`` was
    rescaled in fixed point: 99.7-99.9%)."""
    agreements = _agreements(need(QUANT_DEEPLAB), 513)
    assert agreements == [1.0] * len(PHOTOS), agreements


@pytest.mark.parametrize("size", [65, 66, 67])
def test_quantize_rounds_as_the_runtime_s_kernel_also_in_its_tail(size: int) -> None:
    """The runtime's float ``QUANTIZE`` rounds 8 values at a time, halves to even, and the
    last ``numel % 8`` (channels last) in float64, halves away from zero: pixels
    ``k / 127.5 - 1`` are ties on the grid ``1 / 127.5``, so every value is checked,
    tail included (3, 4 and 3 values at these sizes)."""
    import torch

    from heads.tf_import.emulate import requantize
    from heads.tf_import.layerwise import debugging_interpreter
    from heads.tf_import.rounding import Grid

    interpreter = debugging_interpreter(DATA / "deeplab_ade20k_w100_os16_int8.tflite")
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [1, size, size, 3])
    interpreter.allocate_tensors()
    # every pixel value, and ties (k = 32..63 and 176..223) in the last 8 values
    pixels = np.arange(size * size * 3) % 256
    pixels[-8:] = [52, 51, 203, 204, 33, 222, 40, 187]
    x = pixels.reshape(1, size, size, 3).astype(np.float32) / 127.5 - 1.0
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    (quantize,) = [t for t in interpreter.get_tensor_details() if t["name"] == "tfl.quantize"]
    scale, zero_point = quantize["quantization"]
    stored = interpreter.get_tensor(quantize["index"]).astype(np.int64)
    grid = Grid((scale, zero_point, -128, 127), tie_to_even=True)
    ours = requantize(torch.from_numpy(x).permute(0, 3, 1, 2).double(), grid)
    ours_stored = np.rint(ours.permute(0, 2, 3, 1).numpy() / scale) + zero_point
    assert np.array_equal(ours_stored, stored)


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


@pytest.mark.parametrize("name", PHOTOS)
def test_8bit_ssd_export_equals_the_runtime_with_its_rounding(name: str) -> None:
    """The non-lite SSD MobileNetV2 export (``ssd_mobilenet_v2``) through the same pairing,
    from ``convert --check``'s entry point: its codes and scores equal the runtime's. (The
    parrot differed while biases sat at the file's float32 step rather than the kernel's
    ``input scale x weight scale``: one depthwise sum 3e-5 of a fine step from a tie.)"""
    path = DATA / "ssd_mobilenet_v2_int8.tflite"
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssd_mobilenet_v2"
    result = compare_with_runtime(path, model, meta["builder"], photo(name, SSD_SIZE))
    assert result.quantized and result.emulated
    assert result.max_difference < 1e-6 and result.top1_same
