"""Run an exported file (ONNX in onnxruntime, or an OpenVINO IR) from Python with the same
call as the PyTorch model.

>>> model = load_exported("exported/ssdlite_mobilenet_v2_end2end.xml")
>>> detections = model(images)  # [B, 3, H, W] float tensor -> B dicts, as SSDLite's eval

What a call returns depends on the file, as ``export`` wrote it:

- classifier / segmenter: the ``logits`` tensor (``[B, K]`` / ``[B, K, H, W]``);
- end-to-end detector: a list of ``B`` dicts with ``boxes [D, 4]``, ``scores [D]``,
  ``labels [D]`` (what ``SSDLite`` returns in eval mode);
- raw detector: a dict with ``cls_logits``, ``box_deltas`` and ``anchors`` (what
  ``SSDLite.forward_outputs`` returns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tasks.export.onnx import ort_session

Runtime = Literal["onnxruntime", "openvino"]


class ExportedModel:
    """An exported file behind the PyTorch model's call.

    Args:
        path: an ``.onnx`` file or an OpenVINO ``.xml`` IR written by ``export``.
        runtime: ``"onnxruntime"`` or ``"openvino"`` (default: ``.xml`` -> OpenVINO,
            ``.onnx`` -> onnxruntime; OpenVINO also reads ``.onnx`` files).
        threads: intra-op threads (default: the runtime's choice).

    Attributes:
        output_names: the file's output names.
    """

    def __init__(
        self, path: str | Path, runtime: Runtime | None = None, threads: int | None = None
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model not found: {self.path}")
        if runtime is None:
            runtime = "openvino" if self.path.suffix == ".xml" else "onnxruntime"
        if runtime not in ("onnxruntime", "openvino"):
            raise ValueError(f"runtime must be 'onnxruntime' or 'openvino', got {runtime!r}")
        if runtime == "onnxruntime" and self.path.suffix != ".onnx":
            raise ValueError(f"onnxruntime runs .onnx files, got {self.path.name}")
        self.runtime = runtime
        if runtime == "openvino":
            from tasks.export.openvino import OpenVINORunner

            runner = OpenVINORunner(self.path, threads)
            self.output_names = runner.output_names
            self._run = runner
        else:
            session = ort_session(self.path, threads)
            self.output_names = [o.name for o in session.get_outputs()]
            self._run = lambda x: session.run(None, {"images": x})

    def __call__(self, images: Tensor) -> Any:
        """``images [B, 3, H, W]`` (float, normalized as for the PyTorch model) -> the
        PyTorch model's output (see the module docstring)."""
        if images.dim() != 4:
            raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        out = {
            n: torch.from_numpy(np.array(v))
            for n, v in zip(self.output_names, self._run(x), strict=True)
        }
        if "batch_index" in out:
            index = out["batch_index"]
            return [
                {k: out[k][index == i] for k in ("boxes", "scores", "labels")}
                for i in range(images.shape[0])
            ]
        if "cls_logits" in out:
            return out
        return out["logits"]

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, runtime={self.runtime!r})"


def load_exported(
    path: str | Path, runtime: Runtime | None = None, threads: int | None = None
) -> ExportedModel:
    """An exported ``.onnx``/``.xml`` file, callable like the PyTorch model (see
    ``ExportedModel``)."""
    return ExportedModel(path, runtime, threads)
