"""OpenVINO: convert an exported ONNX file to an OpenVINO IR (``.xml`` + ``.bin``), compile it
for the CPU, and quantize it to int8 with NNCF.

The IR is converted from the ONNX file the exporter already wrote and checked, so both
runtimes run the same graph (NMS included: ONNX ``NonMaxSuppression`` becomes OpenVINO's
``NonMaxSuppression``). The batch dimension stays dynamic. Weights are kept in fp32 (no fp16
compression) and the CPU plugin is asked for fp32 arithmetic: on CPUs with bf16 units
OpenVINO otherwise computes in bf16 by default, which is faster but not within 1e-4.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from tasks.export.loading import ModelKind
from tasks.export.parity import Runner


def _ov() -> Any:
    try:
        import openvino
    except ImportError as err:
        raise ImportError(
            "format='openvino' needs the openvino package: pip install 'mobilezoo[deploy]'"
        ) from err
    return openvino


def export_openvino(onnx_path: Path, xml_path: Path | None = None) -> Path:
    """Convert ``onnx_path`` to an fp32 OpenVINO IR next to it (``<stem>.xml`` + ``.bin``)."""
    ov = _ov()
    xml_path = xml_path or onnx_path.with_suffix(".xml")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def ov_compiled(path: str | Path, threads: int | None = None, precision: str = "f32") -> Any:
    """An OpenVINO model compiled for the CPU (latency hint, fp32 arithmetic by default).

    Args:
        path: an ``.xml`` IR or an ``.onnx`` file.
        threads: inference threads (default: OpenVINO's choice).
        precision: ``"f32"``, or ``"bf16"`` where the CPU has bf16 units (faster, ~1e-2).
    """
    ov = _ov()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


def openvino_runner(path: Path, threads: int | None = None) -> Runner:
    """A parity ``Runner`` of an IR: outputs in the model's output order."""
    compiled = ov_compiled(path, threads)
    outputs = list(compiled.outputs)

    def run(images: np.ndarray) -> list[np.ndarray]:
        result = compiled(images)
        return [np.asarray(result[o]) for o in outputs]

    return run


def quantize_openvino_int8(
    xml_path: Path, int8_path: Path, calibration: Sequence[Tensor], kind: ModelKind
) -> Path:
    """Post-training int8 quantization of an IR with NNCF, calibrated on ``calibration``.

    NNCF's default (mixed) preset with the detector's post-processing excluded: only the
    network's convolutions are quantized, while softmax, decoding and NMS stay in fp32 (an
    8-bit score would break the ranking of thousands of candidates).
    """
    ov = _ov()
    try:
        import nncf
    except ImportError as err:
        raise ImportError(
            "OpenVINO int8 needs the nncf package: pip install 'mobilezoo[deploy]'"
        ) from err
    model = ov.Core().read_model(str(xml_path))
    dataset = nncf.Dataset(list(calibration), lambda image: image.unsqueeze(0).numpy())
    options: dict[str, Any] = {"subset_size": len(calibration)}
    if kind == "detector":
        options["ignored_scope"] = nncf.IgnoredScope(
            types=["Softmax", "NonMaxSuppression", "TopK", "Exp"], validate=False
        )
    quantized = nncf.quantize(model, dataset, **options)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path
