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

A file written by ``export`` also describes itself (``tasks.export.metadata``): its model
kind, class names, input size and normalization. ``predict`` then takes images as they come
(file paths, PIL images or ``uint8 [H, W, 3]`` RGB arrays of any size) and needs nothing else:

>>> model.predict(["street.jpg"])  # [{"boxes", "scores", "labels", "names"}] in the photo's pixels
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from tasks.export.metadata import ExportInfo, read_info
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
        info: the file's own description (kind, class names, input size, normalization),
            ``None`` for a file written without one.
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
        self.info: ExportInfo | None = read_info(self.path)

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

    def predict(self, images: Sequence[Any]) -> list[dict[str, Any]]:
        """Run the file on images as they come, with its own preprocessing.

        Args:
            images: file paths, PIL images or ``uint8 [H, W, 3]`` RGB arrays, any sizes.

        Returns:
            One dict per image. Detector (end-to-end): ``boxes [D, 4]`` (x1, y1, x2, y2 in
            the image's pixels), ``scores [D]``, ``labels [D]``, ``names`` (list of D).
            Classifier: ``probs [K]``, ``label``, ``name``, ``score``. Segmenter: ``mask
            [H, W]`` (class index per pixel at the image's size), ``names`` (the classes).

        Raises:
            ValueError: the file has no description (exported without one), or is a raw
                detector graph (export the end-to-end form to predict).
        """
        info = self.info
        if info is None:
            raise ValueError(
                f"{self.path} does not describe its input (exported before files carried "
                "their kind, class names and normalization): export it again"
            )
        if info.form in ("raw", "joint"):
            raise ValueError(f"{self.path}: predict runs end-to-end detectors, classifiers "
                             f"and segmenters, not the {info.form!r} form")  # fmt: skip
        out = []
        for image in images:
            pixels = _rgb(image)
            height, width = pixels.shape[:2]
            x = _preprocess(pixels, info)
            result = self(x)
            names = info.class_names
            if info.form == "end2end":
                det = result[0]
                scale = torch.tensor([width / x.shape[-1], height / x.shape[-2]] * 2)
                labels = det["labels"].long()
                out.append({"boxes": det["boxes"] * scale, "scores": det["scores"],
                            "labels": labels, "names": [names[i] for i in labels.tolist()]})  # fmt: skip
            elif info.form == "classifier":
                probs = result[0].softmax(-1)
                score, label = probs.max(-1)
                out.append({"probs": probs, "label": int(label), "name": names[int(label)],
                            "score": float(score)})  # fmt: skip
            else:
                logits = torch.nn.functional.interpolate(
                    result, size=(height, width), mode="bilinear", align_corners=False
                )
                out.append({"mask": logits[0].argmax(0), "names": list(names)})
        return out

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, runtime={self.runtime!r})"


def _rgb(image: Any) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB from a path, a PIL image or an array (grey gets 3 channels)."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as opened:
            return np.asarray(opened.convert("RGB"))
    if hasattr(image, "convert"):  # PIL
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"images must be [H, W, 3] RGB arrays, got shape {array.shape}")
    return array.astype(np.uint8, copy=False)


def _preprocess(pixels: np.ndarray, info: ExportInfo) -> Tensor:
    """``uint8 [H, W, 3]`` -> ``[1, 3, h, w]`` float at the file's input size: bilinear
    resize (half-pixel centres, as the data modules' resize), then ``(x / 255 - mean) / std``."""
    x = torch.from_numpy(np.array(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
    if tuple(x.shape[-2:]) != tuple(info.input_size):
        x = torch.nn.functional.interpolate(x, size=info.input_size, mode="bilinear",
                                            align_corners=False).round().clamp(0, 255)  # fmt: skip
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    return (x / 255 - mean) / std


def load_exported(
    path: str | Path, runtime: Runtime | None = None, threads: int | None = None
) -> ExportedModel:
    """An exported ``.onnx``/``.xml`` file, callable like the PyTorch model (see
    ``ExportedModel``)."""
    return ExportedModel(path, runtime, threads)
