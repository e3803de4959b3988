"""TF Lite reader: dequantization and fused 8-bit tensor names (hand-made values), and the
real files' constant tensors (skipped without them)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")

from heads.tf_import.tflite import (
    TFLiteFile,
    dequantize,
    read_tflite_variables,
    weight_scope,
)
from tests.tasks.tf_files import FLOAT_DEEPLAB, QUANT_CLASSIFIER, need


def test_dequantize_per_tensor() -> None:
    raw = np.array([0, 128, 255], dtype=np.uint8)
    out = dequantize(raw, np.array([0.5]), np.array([128]), 0)
    np.testing.assert_array_equal(out, [-64.0, 0.0, 63.5])


def test_dequantize_per_channel_along_the_quantized_dimension() -> None:
    raw = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int8)  # 3 output channels on axis 0
    out = dequantize(raw, np.array([1.0, 0.5, 0.25]), np.array([0, 1, 2]), 0)
    np.testing.assert_array_equal(out, [[1.0, 2.0], [1.0, 1.5], [0.75, 1.0]])


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        ("MobilenetV2/Conv/weights", "MobilenetV2/Conv"),
        (
            "MobilenetV2/expanded_conv/depthwise/depthwise_weights",
            "MobilenetV2/expanded_conv/depthwise",
        ),
        (
            "MobilenetV2/Conv/Conv2D_Fold;MobilenetV2/Conv/weights_quant/FakeQuantWithMinMaxVars",
            "MobilenetV2/Conv",
        ),
        (
            "logits/semantic/Conv2D;logits/semantic/weights_quant/FakeQuantWithMinMaxVars",
            "logits/semantic",
        ),
    ],
)
def test_weight_scope_of_float_and_fused_8bit_names(name: str, scope: str) -> None:
    assert weight_scope(name) == scope


def test_weight_scope_rejects_other_names() -> None:
    with pytest.raises(ValueError, match="BatchNorm_Fold/bias"):
        weight_scope("MobilenetV2/Conv/BatchNorm_Fold/bias")


def test_8bit_file_dequantizes_weights_and_int32_biases() -> None:
    tensors = TFLiteFile(need(QUANT_CLASSIFIER)).tensors()
    weights = next(t for t in tensors.values() if t.name.startswith("MobilenetV2/Conv/Conv2D_Fold"))
    assert weights.raw.dtype == np.uint8 and weights.quantized
    expected = weights.scale[0] * (weights.raw.astype(np.float64) - weights.zero_point[0])
    np.testing.assert_allclose(weights.values, expected, rtol=1e-6)
    bias = tensors["MobilenetV2/Conv/BatchNorm_Fold/bias"]
    assert bias.raw.dtype == np.int32
    np.testing.assert_allclose(bias.values, bias.raw * bias.scale[0], rtol=1e-6)


def test_float_file_variables_have_tflite_layouts() -> None:
    variables = read_tflite_variables(need(FLOAT_DEEPLAB))
    assert variables["MobilenetV2/Conv/weights"].shape == (16, 3, 3, 3)  # OHWI
    assert variables["MobilenetV2/expanded_conv/depthwise/depthwise_weights"].shape == (1, 3, 3, 16)
    assert variables["logits/semantic/biases"].shape == (21,)
    assert len(variables) == 2 * 55  # 55 convolutions, each with weights and (folded) bias
