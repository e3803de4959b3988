"""Export zoo models to ONNX and OpenVINO, check them against PyTorch, quantize to int8, and
run the exported files from Python.

One module per step: ``loading`` (builder names, checkpoints, test images), ``onnx``
(tracing any model kind's graph, onnxruntime sessions), ``openvino`` (IR conversion, compilation, NNCF int8),
``parity`` (runtime against PyTorch), ``quantization`` (onnxruntime int8), ``runtime``
(an exported file called like the PyTorch model) and ``command`` (``export``, the
``mobilezoo export`` command).
"""

from tasks.export.command import DetectorForm, ExportFormat, ExportResult, export
from tasks.export.loading import (
    ModelKind,
    exportable_models,
    images_from_data,
    load_checkpoint,
    load_model,
    model_kind,
)
from tasks.export.onnx import OUTPUTS, export_onnx, ort_session
from tasks.export.parity import ParityReport, check_parity
from tasks.export.quantization import quantize_int8
from tasks.export.runtime import ExportedModel, load_exported

__all__ = [
    "OUTPUTS",
    "DetectorForm",
    "ExportFormat",
    "ExportResult",
    "ExportedModel",
    "ModelKind",
    "ParityReport",
    "check_parity",
    "export",
    "export_onnx",
    "exportable_models",
    "images_from_data",
    "load_checkpoint",
    "load_exported",
    "load_model",
    "model_kind",
    "ort_session",
    "quantize_int8",
]
