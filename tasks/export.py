"""Export a zoo model to ONNX, check it against PyTorch in onnxruntime, quantize it to int8.

``export`` takes a training checkpoint (``.ckpt`` of a zoo task) or a builder name and
writes, into one folder:

- ``<name>.onnx``: classifier logits ``[B, K]``, segmenter logits ``[B, K, H, W]``, or the
  detector's raw outputs ``cls_logits [B, A, K+1]``, ``box_deltas [B, A, 4]``,
  ``anchors [A, 4]``;
- ``<name>_end2end.onnx`` (detector): box decoding, class-wise NMS and the per-image cap in
  the graph; outputs ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``, ``batch_index [D]``
  (the detections of all images of the batch, highest score first within each image);
- ``<name>_int8.onnx`` (and ``<name>_end2end_int8.onnx``) with ``int8=True``: post-training
  static quantization calibrated on images of a data module.

The batch dimension is dynamic everywhere. The TorchScript exporter (``dynamo=False``) is
used on purpose: it exports torchvision's ``nms`` through its registered ONNX symbolic and
writes one self-contained file, while the dynamo exporter needs ``onnxscript``, fails
inside ``batched_nms`` and stores weights in a side file by default.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn

from heads.inference import DetectorEnd2End, DetectorRaw
from tasks.export_names import default_stem

log = logging.getLogger(__name__)

ModelKind = Literal["classifier", "detector", "segmenter"]
DetectorForm = Literal["raw", "end2end", "both"]

#: builder name -> (module, function, kind)
BUILDERS: dict[str, tuple[str, str, ModelKind]] = {
    "mobilenet_v2_classifier": ("heads.classifier", "mobilenet_v2_classifier", "classifier"),
    "ssdlite_mobilenet_v2": ("heads.ssdlite", "ssdlite_mobilenet_v2", "detector"),
    "deeplabv3_mobilenet_v2": ("heads.deeplabv3", "deeplabv3_mobilenet_v2", "segmenter"),
}
#: task class name -> module; the only classes a checkpoint may name
_TASKS = {
    "ClassificationTask": "tasks.classification",
    "DetectionTask": "tasks.detection",
    "SegmentationTask": "tasks.segmentation",
}
_DEFAULT_SIZE: dict[ModelKind, int] = {"classifier": 224, "detector": 320, "segmenter": 513}
_TOLERANCE = 1e-4


# -- loading -------------------------------------------------------------------------------
def _import(module: str, name: str) -> Any:
    return getattr(__import__(module, fromlist=[name]), name)


def model_kind(model: nn.Module) -> ModelKind:
    """``"classifier"``, ``"detector"`` or ``"segmenter"`` for a zoo model."""
    model = getattr(model, "model", model) if type(model).__name__ == "InferenceModel" else model
    if hasattr(model, "forward_raw") and hasattr(model, "postprocessor"):
        return "detector"
    name = type(model).__name__
    if name == "MobileDeepLabV3":
        return "segmenter"
    if name == "MobileNetV2Classifier":
        return "classifier"
    raise TypeError(
        f"cannot export a {name}: expected MobileNetV2Classifier, SSDLite or MobileDeepLabV3"
    )


def _task_class(class_path: str | None, state: dict[str, Tensor], source: Path) -> type:
    if class_path is not None:
        name = class_path.rsplit(".", 1)[-1]
        if name not in _TASKS:
            raise ValueError(f"{source} was saved by {class_path}; export knows {sorted(_TASKS)}")
    elif any(k.startswith("model.head.cls_predictors") for k in state):
        name = "DetectionTask"
    elif any(k.startswith("model.head.image_pooling") for k in state):
        name = "SegmentationTask"
    elif "model.head.classifier.1.weight" in state:
        name = "ClassificationTask"
    else:
        raise ValueError(f"{source}: cannot tell which zoo task saved this checkpoint")
    return _import(_TASKS[name], name)


def load_checkpoint(path: str | Path) -> nn.Module:
    """The trained model (``task.model``, eval mode) of a zoo task's Lightning checkpoint.

    The file is read with ``weights_only=True`` (no code runs); the task is rebuilt from
    the saved hyper-parameters with ``weights``/``weights_backbone`` set to ``None`` (the
    checkpoint holds the trained weights, so nothing is downloaded).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only errors all mean "not readable"
        raise ValueError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    hparams = dict(ckpt.get("hyper_parameters") or {})
    task_cls = _task_class(hparams.pop("_class_path", None), ckpt["state_dict"], path)
    accepted = inspect.signature(task_cls.__init__).parameters
    kwargs = {k: v for k, v in hparams.items() if k in accepted}
    for key in ("weights", "weights_backbone"):
        if key in kwargs:
            kwargs[key] = None
    task = task_cls(**kwargs)
    task.load_state_dict(ckpt["state_dict"])
    return task.model.eval()


def load_model(source: str | Path | nn.Module, builder_args: dict[str, Any] | None = None):
    """A model from a builder name (``BUILDERS``), a checkpoint path, or a module as is."""
    if isinstance(source, nn.Module):
        return source.eval()
    if str(source) in BUILDERS:
        module, fn, _ = BUILDERS[str(source)]
        return _import(module, fn)(**(builder_args or {})).eval()
    if builder_args:
        raise ValueError("builder_args apply to builder names only, not to checkpoints")
    path = Path(source).expanduser()
    if path.suffix != ".ckpt" and not path.is_file():
        raise ValueError(
            f"{source!r} is neither a builder name ({', '.join(BUILDERS)}) nor a .ckpt file"
        )
    return load_checkpoint(path)


# -- graphs --------------------------------------------------------------------------------
_OUTPUTS: dict[str, tuple[str, ...]] = {
    "classifier": ("logits",),
    "segmenter": ("logits",),
    "raw": ("cls_logits", "box_deltas", "anchors"),
    "end2end": ("boxes", "scores", "labels", "batch_index"),
}


def export_onnx(
    graph: nn.Module, form: str, path: Path, image_size: tuple[int, int], opset: int = 17
) -> Path:
    """Trace ``graph`` on a ``[2, 3, H, W]`` input and write ``path`` (one file, dynamic batch)."""
    outputs = _OUTPUTS[form]
    dynamic: dict[str, dict[int, str]] = {"images": {0: "batch"}}
    for name in outputs:
        if name != "anchors":
            dynamic[name] = {0: "detections" if form == "end2end" else "batch"}
    example = torch.randn(2, 3, *image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation + tracer notes
        torch.onnx.export(
            graph.eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return path


# -- parity --------------------------------------------------------------------------------
@dataclass
class ParityReport:
    """onnxruntime against PyTorch on the same images.

    Attributes:
        file: the ONNX file checked.
        images: number of images compared.
        max_abs_diff: largest absolute difference per output (detector: after matching).
        detections: detector end-to-end only: (PyTorch, onnxruntime) detection counts.
        passed: every output within ``tolerance`` absolute plus ``tolerance`` relative
            (detections: same count and labels, scores within ``tolerance``, boxes within
            ``tolerance`` times the largest coordinate).
    """

    file: Path
    images: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    detections: tuple[int, int] | None = None
    tolerance: float = _TOLERANCE
    passed: bool = True

    def __str__(self) -> str:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
        extra = ""
        if self.detections is not None:
            extra = f"; detections torch {self.detections[0]} / onnxruntime {self.detections[1]}"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"[{verdict}] {self.file.name}: {self.images} images, max |onnxruntime - torch|: "
            f"{diffs} (tolerance {self.tolerance:g}){extra}"
        )


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """A CPU onnxruntime session with all graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_parity(
    path: Path, graph: nn.Module, form: str, images: Tensor, tolerance: float = _TOLERANCE
) -> ParityReport:
    """Run ``images`` through ``graph`` (PyTorch) and ``path`` (onnxruntime) and compare."""
    session = ort_session(path)
    ort_out = session.run(None, {"images": images.numpy()})
    report = ParityReport(path, images.shape[0], tolerance=tolerance)
    with torch.no_grad():
        if form == "end2end":
            expected = graph.model(images)  # the model's own per-image post-processing
            return _compare_detections(report, expected, ort_out)
        torch_out = graph(images)
    torch_out = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    close = True
    for name, ours, theirs in zip(_OUTPUTS[form], torch_out, ort_out, strict=True):
        ours = ours.numpy()
        if ours.shape != theirs.shape:
            report.max_abs_diff[name], close = float("inf"), False
            continue
        report.max_abs_diff[name] = float(np.abs(ours - theirs).max(initial=0.0))
        # torch.allclose's rule with atol = rtol = tolerance (large logits differ in ulps)
        close &= bool(np.allclose(theirs, ours, rtol=tolerance, atol=tolerance))
    report.passed = close
    return report


def _compare_detections(
    report: ParityReport, expected: list[dict[str, Tensor]], ort_out: list[np.ndarray]
) -> ParityReport:
    boxes, scores, labels, index = ort_out
    n_torch = sum(len(d["scores"]) for d in expected)
    report.detections = (n_torch, len(scores))
    box_diff = score_diff = 0.0
    same = n_torch == len(scores)
    for i, det in enumerate(expected):
        sel = index == i
        if not same or sel.sum() != len(det["scores"]):
            same = False
            break
        # Order both by (label, score, x1, y1), scores rounded so that float noise cannot
        # swap two near-equal detections and fake a difference.
        a = _detection_order(det["labels"].numpy(), det["scores"].numpy(), det["boxes"].numpy())
        b = _detection_order(labels[sel], scores[sel], boxes[sel])
        if not np.array_equal(det["labels"].numpy()[a], labels[sel][b]):
            same = False
            break
        box_diff = max(
            box_diff, float(np.abs(det["boxes"].numpy()[a] - boxes[sel][b]).max(initial=0.0))
        )
        score_diff = max(
            score_diff, float(np.abs(det["scores"].numpy()[a] - scores[sel][b]).max(initial=0.0))
        )
    report.max_abs_diff = {"boxes": box_diff, "scores": score_diff}
    # Box coordinates are pixels (hundreds): compare them relative to the image size.
    scale = max([1.0] + [float(d["boxes"].abs().max()) for d in expected if len(d["boxes"])])
    tol = report.tolerance
    report.passed = same and score_diff <= tol and box_diff <= tol * scale
    return report


def _detection_order(labels: np.ndarray, scores: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    keys = (np.round(boxes[:, 1], 2), np.round(boxes[:, 0], 2), -np.round(scores, 5), labels)
    return np.lexsort(keys)


# -- int8 ----------------------------------------------------------------------------------
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


def images_from_data(data: LightningDataModule, count: int, image_size: tuple[int, int]) -> Tensor:
    """Up to ``count`` validation images ``[N, 3, H, W]`` of a data module, resized to
    ``image_size`` (bilinear) when they are not that size already."""
    data.prepare_data()
    data.setup("validate")
    out: list[Tensor] = []
    for batch in data.val_dataloader():
        if isinstance(batch, dict):
            images = batch["image"]
        elif isinstance(batch, list | tuple):
            images = batch[0]
        else:
            images = batch
        for image in images if isinstance(images, Tensor) else list(images):
            if tuple(image.shape[-2:]) != tuple(image_size):
                image = F.interpolate(image[None], size=image_size, mode="bilinear")[0]
            out.append(image.float())
            if len(out) == count:
                return torch.stack(out)
    if not out:
        raise ValueError(f"{type(data).__name__} has no validation images")
    return torch.stack(out)


# -- the command ---------------------------------------------------------------------------
@dataclass
class ExportResult:
    """Files written by ``export`` and their parity reports."""

    kind: ModelKind
    files: list[Path] = field(default_factory=list)
    parity: list[ParityReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.parity)

    def __str__(self) -> str:
        lines = [f"Exported {self.kind}:"]
        lines += [f"  {p}  ({p.stat().st_size / 2**20:.2f} MiB)" for p in self.files]
        if self.parity:
            lines.append("Parity (onnxruntime vs PyTorch):")
            lines += [f"  {r}" for r in self.parity]
        return "\n".join(lines)


def export(
    source: str,
    output_dir: str = "exported",
    name: str | None = None,
    image_size: int | None = None,
    detector_form: DetectorForm = "both",
    builder_args: dict[str, Any] | None = None,
    check: bool = True,
    num_check_images: int = 4,
    int8: bool = False,
    num_calibration_images: int = 32,
    data: LightningDataModule | None = None,
    opset: int = 17,
    seed: int = 0,
    printer: Callable[[str], None] | None = print,
) -> ExportResult:
    """Export a zoo model to ONNX (dynamic batch), check it in onnxruntime, optionally int8.

    Args:
        source: a checkpoint (``.ckpt`` written by ``mobilezoo fit``) or a builder name:
            ``mobilenet_v2_classifier``, ``ssdlite_mobilenet_v2``, ``deeplabv3_mobilenet_v2``.
        output_dir: folder for the ONNX files.
        name: file stem (default: ``tasks.export_names.default_stem``: the builder, the
            run and the checkpoint, e.g. ``ssdlite_mobilenet_v2-detection_demo-version_0-last``).
        image_size: square input side of the graph (default: 224 classifier, the model's
            ``image_size`` (320) detector, 513 segmenter).
        detector_form: ``"raw"``, ``"end2end"`` (decoding + NMS in the graph) or ``"both"``.
        builder_args: keyword arguments of the builder (builder names only).
        check: compare onnxruntime with PyTorch and report (raises if a check fails).
        num_check_images: images used for the parity check.
        int8: also write statically quantized int8 models.
        num_calibration_images: images used to calibrate the int8 ranges.
        data: a data module whose validation images are used for the check and the
            calibration (default: seeded random images, fine for parity, poor for int8).
        opset: ONNX opset.
        seed: seed of the random images.
        printer: where the report goes (``None``: silent).

    Returns:
        The written files and parity reports.

    Raises:
        RuntimeError: a parity check failed (the files are kept for inspection).
    """
    model = load_model(source, builder_args)
    kind = model_kind(model)
    stem = name or default_stem(source, kind)
    side = image_size or getattr(model, "image_size", None) or _DEFAULT_SIZE[kind]
    size = (int(side), int(side))
    out = Path(output_dir).expanduser()
    forms = {"classifier": ["classifier"], "segmenter": ["segmenter"]}.get(kind) or (
        ["raw", "end2end"] if detector_form == "both" else [detector_form]
    )
    needed = max(num_check_images if check else 0, num_calibration_images if int8 else 0)
    if data is not None and needed:
        images = images_from_data(data, needed, size)
    else:
        images = torch.randn(
            max(needed, 1), 3, *size, generator=torch.Generator().manual_seed(seed)
        )
    result = ExportResult(kind)
    for form in forms:
        graph = {"raw": DetectorRaw, "end2end": DetectorEnd2End}.get(form)
        graph = graph(model, size) if graph else model
        path = out / f"{stem}{'_end2end' if form == 'end2end' else ''}.onnx"
        result.files.append(export_onnx(graph, form, path, size, opset))
        if check:
            result.parity.append(check_parity(path, graph, form, images[:num_check_images]))
        if int8:
            int8_path = path.with_name(path.stem + "_int8.onnx")
            result.files.append(
                quantize_int8(path, int8_path, images[:num_calibration_images], kind)
            )
    if printer is not None:
        printer(str(result))
    if not result.passed:
        failed = [str(r) for r in result.parity if not r.passed]
        raise RuntimeError("onnxruntime disagrees with PyTorch:\n" + "\n".join(failed))
    return result
