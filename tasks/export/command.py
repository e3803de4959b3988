"""``export``: a zoo model to ONNX or OpenVINO (dynamic batch), checked against PyTorch,
optionally quantized to int8.

``export`` takes a training checkpoint (``.ckpt`` of a zoo task) or a builder name and
writes, into one folder:

- ``<name>.onnx``: the model's raw graph (``heads.inference.RawGraph``), its outputs named
  by the model (``heads.outputs``): classifier ``logits [B, K]``, segmenter
  ``logits [B, K, H, W]``, detector ``cls_logits [B, A, K+1]``, ``box_deltas [B, A, 4]``,
  ``anchors [A, 4]``, joint model the detector's and ``seg_logits [B, S, H, W]``;
- ``<name>_end2end.onnx`` (detector): box decoding, pruning, class-wise NMS and the
  per-image cap in the graph; outputs ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``,
  ``batch_index [D]`` (the detections of all images of the batch, highest score first
  within each image);
- with ``format="openvino"`` also ``<name>.xml``/``.bin`` (and ``<name>_end2end.xml``): the
  same graphs as OpenVINO IRs;
- with ``int8=True``: ``<name>_int8.onnx`` (onnxruntime static quantization) or
  ``<name>_int8.xml`` (NNCF), calibrated on images of a data module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule

from heads import builder_of_kind
from heads.inference import DetectorEnd2End, RawGraph
from tasks.export.loading import ModelKind, images_from_data, load_model, model_kind
from tasks.export.metadata import ExportInfo, describe, stamp
from tasks.export.names import default_stem
from tasks.export.onnx import export_onnx
from tasks.export.parity import ParityReport, check_parity
from tasks.export.quantization import quantize_int8

DetectorForm = Literal["raw", "end2end", "both"]
ExportFormat = Literal["onnx", "openvino"]


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
        lines += [f"  {p}  ({_size_mib(p):.2f} MiB)" for p in self.files]
        if self.parity:
            lines.append("Parity (runtime vs PyTorch):")
            lines += [f"  {r}" for r in self.parity]
        return "\n".join(lines)


def export(
    source: str,
    output_dir: str = "exported",
    name: str | None = None,
    image_size: int | None = None,
    detector_form: DetectorForm = "both",
    format: ExportFormat = "onnx",
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
    """Export a zoo model to ONNX or OpenVINO (dynamic batch), check it against PyTorch in
    the runtime, optionally quantize it to int8.

    Args:
        source: a checkpoint (``.ckpt`` written by ``mobilezoo fit``), a weights file, or a
            registered builder name (``heads.list_models()``, bare backbones aside).
        output_dir: folder for the exported files.
        name: file stem (default: ``tasks.export.names.default_stem``: the builder, the
            run and the checkpoint and a hash of its path, e.g.
            ``ssdlite_mobilenet_v2-detection_demo-version_0-last-1f2e3d``; a builder's
            arguments).
        image_size: square input side of the graph (default: the model's ``image_size``
            where it has one, else its builder's registered ``default_size``).
        detector_form: ``"raw"``, ``"end2end"`` (decoding + NMS in the graph) or ``"both"``.
        format: ``"onnx"`` (checked in onnxruntime) or ``"openvino"`` (the ONNX file is
            also converted to an OpenVINO IR, and both are checked).
        builder_args: keyword arguments of the builder (builder names only).
        check: compare the runtime(s) with PyTorch and report (raises if a check fails).
        num_check_images: images used for the parity check.
        int8: also write statically quantized int8 models (onnxruntime's quantizer for
            ONNX, NNCF for OpenVINO).
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
    if format not in ("onnx", "openvino"):
        raise ValueError(f"format must be 'onnx' or 'openvino', got {format!r}")
    model = load_model(source, builder_args)
    kind = model_kind(model)
    if int8 and kind == "joint":
        raise ValueError("the joint model exports in fp32 only (no int8 yet)")
    stem = name or default_stem(source, kind, builder_args)
    side = image_size or getattr(model, "image_size", None) or builder_of_kind(kind).default_size
    size = (int(side), int(side))
    out = Path(output_dir).expanduser()
    forms: list[str] = [kind]
    if kind == "detector":  # the raw network, and/or decoding + NMS in the graph
        forms = ["raw", "end2end"] if detector_form == "both" else [detector_form]
    needed = max(num_check_images if check else 0, num_calibration_images if int8 else 0)
    if data is not None and needed:
        images = images_from_data(data, needed, size)
    else:
        images = torch.randn(
            max(needed, 1), 3, *size, generator=torch.Generator().manual_seed(seed)
        )
    result = ExportResult(kind)
    described = describe(source, model, kind, forms[0], size, builder_args)
    for form in forms:
        info = replace(described, form=form)
        graph = (DetectorEnd2End if form == "end2end" else RawGraph)(model, size)
        path = out / f"{stem}{'_end2end' if form == 'end2end' else ''}.onnx"
        result.files.append(export_onnx(graph, form, path, size, opset))
        stamp(path, info)
        check_images = images[:num_check_images]
        if check:
            result.parity.append(check_parity(path, graph, form, check_images))
        if format == "openvino":
            result.files.append(
                _openvino(path, graph, form, check_images if check else None, result, info)
            )
        if int8:
            calibration = images[:num_calibration_images]
            result.files.append(_int8(result.files[-1], calibration, kind))
            stamp(result.files[-1], info)
    if printer is not None:
        printer(str(result))
    if not result.passed:
        failed = [str(r) for r in result.parity if not r.passed]
        raise RuntimeError("the runtime disagrees with PyTorch:\n" + "\n".join(failed))
    return result


def _openvino(onnx_path: Path, graph: Any, form: str, images: Any, result: ExportResult,
              info: ExportInfo) -> Path:  # fmt: skip
    from tasks.export.openvino import OpenVINORunner, export_openvino

    xml = export_openvino(onnx_path)
    stamp(xml, info)
    if images is not None:
        report = check_parity(
            xml, graph, form, images, runner=OpenVINORunner(xml), runtime="openvino"
        )
        result.parity.append(report)
    return xml


def _int8(path: Path, calibration: Any, kind: ModelKind) -> Path:
    int8_path = path.with_name(path.stem + "_int8" + path.suffix)
    if path.suffix == ".xml":
        from tasks.export.openvino import quantize_openvino_int8

        return quantize_openvino_int8(path, int8_path, calibration, kind)
    return quantize_int8(path, int8_path, calibration, kind)


def _size_mib(path: Path) -> float:
    """Size of an exported model; an OpenVINO IR counts its ``.bin`` weights too."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    return sum(f.stat().st_size for f in files if f.is_file()) / 2**20
