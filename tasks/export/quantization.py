"""int8 post-training static quantization of an exported ONNX file (onnxruntime)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:  # loading is the Lightning side; running a file does not need it
    from tasks.export.loading import ModelKind

log = logging.getLogger(__name__)


def quantize_int8(
    fp32_path: Path, int8_path: Path, calibration: Sequence[Tensor], kind: ModelKind
) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations, MinMax
    calibration) of convolutions and linear layers, calibrated on ``calibration`` images.

    Only Conv and Gemm are quantized: softmax scores, box decoding and NMS stay in float
    (an 8-bit score would break the ranking of thousands of candidates).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[Tensor] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._it, None)
            return None if image is None else {"images": image.unsqueeze(0).numpy()}

    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Shape inference + graph clean-up (folded weights become initializers), as the
    # onnxruntime quantization guide recommends; NMS graphs may defeat symbolic inference.
    prepared = int8_path.with_name(int8_path.stem + "_prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=kind == "detector")
    except Exception as err:  # fall back to the plain graph
        log.warning("quantization pre-processing failed (%s); quantizing as exported", err)
        prepared = fp32_path
    ops = ["Conv", "Gemm"] if kind == "detector" else ["Conv", "Gemm", "Add"]
    quantize_static(
        str(prepared),
        str(int8_path),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=ops,
    )
    if prepared != fp32_path:
        prepared.unlink(missing_ok=True)
    return int8_path
