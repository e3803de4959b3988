"""OpenVINO: convert an exported ONNX file to an OpenVINO IR (``.xml`` + ``.bin``), compile it
for the CPU, and quantize it to int8 with NNCF.

The IR is converted from the ONNX file the exporter already wrote and checked, so both
runtimes run the same graph (NMS included: ONNX ``NonMaxSuppression`` becomes OpenVINO's
``NonMaxSuppression``). The batch dimension stays dynamic in the file; ``OpenVINORunner``
compiles it for each input shape it is given. Weights are kept in fp32 (no fp16
compression) and the CPU plugin is asked for fp32 arithmetic: on CPUs with bf16 units
OpenVINO otherwise computes in bf16 by default, which is faster but not within 1e-4.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

if TYPE_CHECKING:  # loading is the Lightning side; running a file does not need it
    from tasks.export.loading import ModelKind


def _ov() -> Any:
    try:
        import openvino
    except ImportError as err:
        raise ImportError(
            "format='openvino' needs the openvino package: pip install 'mobilezoo[deploy]'"
        ) from err
    return openvino


@functools.cache
def _core() -> Any:
    """The process's one OpenVINO ``Core``. It must outlive every model compiled with it (a
    compiled model whose ``Core`` was freed crashed the interpreter later), and OpenVINO
    advises one per application."""
    return _ov().Core()


def export_openvino(onnx_path: Path, xml_path: Path | None = None) -> Path:
    """Convert ``onnx_path`` to an fp32 OpenVINO IR next to it (``<stem>.xml`` + ``.bin``)."""
    ov = _ov()
    xml_path = xml_path or onnx_path.with_suffix(".xml")
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def ov_compiled(
    path: str | Path,
    threads: int | None = None,
    precision: str = "f32",
    shape: Sequence[int] | None = None,
) -> Any:
    """An OpenVINO model compiled for the CPU (latency hint, fp32 arithmetic by default).

    Args:
        path: an ``.xml`` IR or an ``.onnx`` file.
        threads: inference threads (default: OpenVINO's choice).
        precision: ``"f32"``, or ``"bf16"`` where the CPU has bf16 units (faster, ~1e-2).
        shape: compile for this input shape only (default: the file's shapes, batch
            dynamic).
    """
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    model = _core().read_model(str(path))
    if shape is not None:
        model.reshape(list(shape))
    return _core().compile_model(model, "CPU", config)


#: input shapes an ``OpenVINORunner`` compiles a static model for; others run in the
#: dynamic-batch model
MAX_STATIC_SHAPES = 4


class OpenVINORunner:
    """An IR run from numpy, compiled once per input shape: ``runner(images)`` -> its
    outputs in the model's output order.

    OpenVINO runs a graph of static shapes faster than the same graph with a dynamic
    batch, where every node infers its shapes and prepares its kernels again on each
    call: SSDLite end to end at batch 1 on 2 cores took 7.2 instead of 8.4 ms, and its
    raw network 6.8 instead of 7.3 ms. So the file (batch dynamic, as ``export`` writes it)
    is reshaped to each new input shape and compiled on first use (a fraction of a
    second), as the PyTorch fast path traces per shape; past ``MAX_STATIC_SHAPES`` shapes
    the dynamic-batch model runs.

    Args:
        path: an ``.xml`` IR or an ``.onnx`` file.
        threads: inference threads (default: OpenVINO's choice).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads
        try:
            model = _core().read_model(str(path))
        except RuntimeError as err:  # OpenVINO's message names its own source, not the file
            reason = [line for line in str(err).splitlines() if line.strip()][-1]
            raise ValueError(f"{self.path}: not a readable OpenVINO model ({reason})") from err
        self.output_names = [o.get_any_name() for o in model.outputs]
        self.input_shape = model.input(0).get_partial_shape()
        self._compiled: dict[tuple[int, ...] | None, Any] = {}  # None: the dynamic model
        self._requests: dict[Any, Any] = {}  # compiled model -> its infer request

    def compiled_for(self, shape: Sequence[int]) -> Any:
        """The compiled model that runs inputs of ``shape``."""
        key: tuple[int, ...] | None = tuple(int(d) for d in shape)
        if not self.input_shape.compatible(_ov().PartialShape(list(key))):
            raise ValueError(
                f"{self.path.name} takes inputs of shape {self.input_shape}, got {key}"
            )
        if key not in self._compiled and len(self._compiled) >= MAX_STATIC_SHAPES:
            key = None
        if key not in self._compiled:
            self._compiled[key] = ov_compiled(self.path, self.threads, shape=key)
        return self._compiled[key]

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        compiled = self.compiled_for(images.shape)
        if compiled not in self._requests:
            self._requests[compiled] = compiled.create_infer_request()
        # zero-copy input (as ``CompiledModel.__call__`` does); outputs are copied, so they
        # outlive the next call
        result = self._requests[compiled].infer(images, share_inputs=True)
        return [np.asarray(result[o]) for o in compiled.outputs]


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
    model = _core().read_model(str(xml_path))
    dataset = nncf.Dataset(list(calibration), lambda image: image.unsqueeze(0).numpy())
    options: dict[str, Any] = {"subset_size": len(calibration)}
    if kind == "detector":
        options["ignored_scope"] = nncf.IgnoredScope(
            types=["Softmax", "NonMaxSuppression", "TopK", "Exp"], validate=False
        )
    quantized = nncf.quantize(model, dataset, **options)
    ov.save_model(quantized, str(int8_path), compress_to_fp16=False)
    return int8_path
