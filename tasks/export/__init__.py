"""Export zoo models to ONNX and OpenVINO, check them against PyTorch, quantize to int8, and
run the exported files from Python.

One module per step: ``loading`` (builder names, checkpoints, test images), ``onnx``
(tracing any model kind's graph, onnxruntime sessions), ``openvino`` (IR conversion, compilation, NNCF int8),
``parity`` (runtime against PyTorch), ``quantization`` (onnxruntime int8), ``runtime``
(an exported file called like the PyTorch model), ``names`` (the file names of exports)
and ``command`` (``export``, the ``mobilezoo export`` command).

Running an exported file is the model side: ``runtime``, ``metadata``, ``onnx``,
``openvino``, ``parity`` and ``quantization`` import neither Lightning nor a data
module. ``loading`` and ``command`` read task checkpoints and data modules (the Lightning
side). The names below load on first use (PEP 562), so ``from tasks.export import
load_exported`` imports the runtime alone.
"""

from __future__ import annotations

from tasks.lazy_names import lazy_names

#: public name -> the module that defines it
_MODULES = {
    "OUTPUTS": "tasks.export.onnx",
    "DetectorForm": "tasks.export.command",
    "ExportFormat": "tasks.export.command",
    "ExportResult": "tasks.export.command",
    "ExportedModel": "tasks.export.runtime",
    "ModelKind": "tasks.export.loading",
    "ParityReport": "tasks.export.parity",
    "check_parity": "tasks.export.parity",
    "export": "tasks.export.command",
    "export_onnx": "tasks.export.onnx",
    "exportable_models": "tasks.export.loading",
    "images_from_data": "tasks.export.loading",
    "load_checkpoint": "tasks.export.loading",
    "load_exported": "tasks.export.runtime",
    "load_model": "tasks.export.loading",
    "model_kind": "tasks.export.loading",
    "ort_session": "tasks.export.onnx",
    "quantize_int8": "tasks.export.quantization",
}
__all__ = sorted(_MODULES)

__getattr__, __dir__ = lazy_names("tasks.export", _MODULES)
