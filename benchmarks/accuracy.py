"""Accuracy of int8 against fp32 (onnxruntime and OpenVINO) on a trained model's validation set.

The checkpoint's run folder holds the ``config.yaml`` that ``mobilezoo fit`` saved; its
``data:`` section rebuilds the validation set. Metrics: top-1 (classifier), mIoU from one
confusion matrix (segmenter), COCO mAP@[.5:.95] through pycocotools on the validation
images as fed to the model (detector). Calibration uses training-set images, so the
validation images stay unseen.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from benchmarks.latency import OPENVINO
from heads.inference import DetectorEnd2End
from tasks.data.base import LoaderOptions
from tasks.export import (
    export_onnx,
    load_checkpoint,
    model_kind,
    ort_session,
    quantize_int8,
)


def data_module_from_run(ckpt: Path) -> Any:
    """The data module of the ``config.yaml`` next to (or above) ``ckpt``."""
    for folder in ckpt.resolve().parents:
        config = folder / "config.yaml"
        if config.is_file():
            break
    else:
        raise FileNotFoundError(f"no config.yaml found above {ckpt}")
    data = yaml.safe_load(config.read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    if module.split(".")[0] != "tasks":
        raise ValueError(f"{config}: data class {data['class_path']} is not a zoo data module")
    cls = getattr(importlib.import_module(module), name)
    init = dict(data.get("init_args") or {})
    # runs saved before the ``loader`` group hold its values at the top level
    loader = {f.name: init.pop(f.name) for f in fields(LoaderOptions) if f.name in init}
    loader.update(init.pop("loader", None) or {})
    dm = cls(**init, **({"loader": LoaderOptions(**loader)} if loader else {}))
    dm.num_workers, dm.persistent_workers = 0, False
    return dm


def _pair(batch: Any) -> tuple[torch.Tensor, Any]:
    """``(images, targets)`` of a batch, tuple-style or dict-style (segmentation)."""
    if isinstance(batch, dict):
        return batch["image"], batch.get("mask")
    return batch[0], batch[1]


def _train_images(dm: Any, count: int) -> torch.Tensor:
    dm.setup("fit")
    out = []
    for batch in dm.train_dataloader():
        out.extend(_pair(batch)[0])
        if len(out) >= count:
            break
    return torch.stack(out[:count])


def evaluate(ckpt: str, threads: int, calibration: int = 32) -> dict[str, Any]:
    """fp32 and int8 metric, file sizes and batch-1 latency for one checkpoint."""
    model = load_checkpoint(ckpt)
    kind = model_kind(model)
    dm = data_module_from_run(Path(ckpt))
    dm.prepare_data()
    dm.setup("validate")
    val = [_pair(b) for b in dm.val_dataloader()]
    size = tuple(val[0][0].shape[-2:])
    graph, form = (DetectorEnd2End(model, size), "end2end") if kind == "detector" else (model, kind)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(graph, form, Path(tmp) / "fp32.onnx", size)
        calib = _train_images(dm, calibration)
        if tuple(calib.shape[-2:]) != size:
            calib = torch.nn.functional.interpolate(calib, size=size, mode="bilinear")
        int8 = quantize_int8(fp32, Path(tmp) / "int8.onnx", list(calib), kind)
        result: dict[str, Any] = {"kind": kind, "checkpoint": ckpt}
        files = [("fp32", fp32), ("int8", int8)]
        if OPENVINO:
            from tasks.export.openvino import export_openvino, quantize_openvino_int8

            xml = export_openvino(fp32, Path(tmp) / "fp32.xml")
            ov_int8 = quantize_openvino_int8(xml, Path(tmp) / "int8.xml", list(calib), kind)
            files += [("ov_fp32", xml), ("ov_int8", ov_int8)]
        for name, path in files:
            session = _OpenVINOSession(path, threads) if path.suffix == ".xml" else None
            session = session or ort_session(path, threads)
            result[f"{name}_metric"] = _metric(kind, session, val, size)
            sizes = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
            result[f"{name}_mb"] = sum(f.stat().st_size for f in sizes) / 2**20
            x = val[0][0][:1].numpy()
            session.run(None, {"images": x})
            start = time.perf_counter()
            for _ in range(10):
                session.run(None, {"images": x})
            result[f"{name}_ms"] = (time.perf_counter() - start) * 100
    return result


class _OpenVINOSession:
    """An OpenVINO IR behind onnxruntime's ``run(None, feeds)``."""

    def __init__(self, path: Path, threads: int) -> None:
        from tasks.export.openvino import OpenVINORunner

        self.runner = OpenVINORunner(path, threads)

    def run(self, _: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.runner(feeds["images"])


def pruning_map_change(ckpt: str) -> tuple[float, float]:
    """Demo mAP (%) of a detector checkpoint in PyTorch with the unpruned post-processing
    (``topk_candidates=None``) and with the default pruning budget."""
    from torchmetrics.detection import MeanAveragePrecision

    model = load_checkpoint(ckpt)
    dm = data_module_from_run(Path(ckpt))
    dm.prepare_data()
    dm.setup("validate")
    post = model.postprocessor
    budgeted = post.options
    out = []
    for options in (replace(budgeted, topk_candidates=None), budgeted):
        post.options = options
        metric = MeanAveragePrecision(backend="pycocotools")
        for images, targets in dm.val_dataloader():
            with torch.no_grad():
                preds = model(images)
            metric.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        out.append(100.0 * float(metric.compute()["map"]))
    return out[0], out[1]


def _metric(kind: str, session: Any, val: list[Any], size: tuple[int, int]) -> float:
    if kind == "classifier":
        correct = total = 0
        for images, labels in val:
            (logits,) = session.run(None, {"images": images.numpy()})
            correct += int((logits.argmax(1) == labels.numpy()).sum())
            total += len(labels)
        return 100.0 * correct / total
    if kind == "segmenter":
        confusion = None
        for images, masks in val:
            if tuple(images.shape[-2:]) != size:
                continue  # the graph has a fixed size; demo sets have one size
            (logits,) = session.run(None, {"images": images.numpy()})
            num_classes = logits.shape[1]
            if confusion is None:
                confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
            pred, truth = logits.argmax(1).ravel(), masks.numpy().ravel()
            ok = truth < num_classes
            confusion += np.bincount(
                truth[ok] * num_classes + pred[ok], minlength=num_classes**2
            ).reshape(num_classes, num_classes)
        inter = np.diag(confusion)
        union = confusion.sum(0) + confusion.sum(1) - inter
        return 100.0 * float(np.mean(inter[union > 0] / union[union > 0]))
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(backend="pycocotools")
    for images, targets in val:
        boxes, scores, labels, index = session.run(None, {"images": images.numpy()})
        preds = [
            {
                "boxes": torch.from_numpy(boxes[index == i]),
                "scores": torch.from_numpy(scores[index == i]),
                "labels": torch.from_numpy(labels[index == i]),
            }
            for i in range(len(targets))
        ]
        truth = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        metric.update(preds, truth)
    return 100.0 * float(metric.compute()["map"])


def accuracy_section(checkpoints: dict[str, str], threads: int) -> str:
    """Markdown table of fp32 vs int8 for each checkpoint."""
    names = {"classifier": "top-1 %", "segmenter": "mIoU %", "detector": "mAP %"}
    rows = []
    pruning = ""
    for kind, ckpt in checkpoints.items():
        print(f"int8 accuracy: {ckpt}", flush=True)
        r = evaluate(ckpt, threads)
        for runtime, prefix in (("onnxruntime", ""), ("OpenVINO", "ov_")):
            if f"{prefix}fp32_metric" not in r:
                continue
            fp32, int8 = r[f"{prefix}fp32_metric"], r[f"{prefix}int8_metric"]
            rows.append(
                f"| {r['kind']} | {runtime} | {names[r['kind']]} | {fp32:.2f} | {int8:.2f} | "
                f"{int8 - fp32:+.2f} | {r[f'{prefix}fp32_mb']:.2f} / {r[f'{prefix}int8_mb']:.2f} "
                f"| {r[f'{prefix}fp32_ms']:.1f} / {r[f'{prefix}int8_ms']:.1f} |"
            )
        if kind == "detector":
            full, pruned = pruning_map_change(ckpt)
            pruning = (
                f"\n\nDetector post-processing on the demo validation set (PyTorch): mAP "
                f"{full:.3f}% unpruned, {pruned:.3f}% with the 1000-candidate pruning "
                f"(change {pruned - full:+.4f} points; the budget is 0.1 points = 0.001)."
            )
    header = (
        "| model | runtime | metric | fp32 | int8 | change | MiB fp32 / int8 "
        "| ms fp32 / int8 (batch 1) |\n|---|---|---|---|---|---|---|---|"
    )
    note = (
        "Demo sets, checkpoints trained with the demo configs. onnxruntime: static int8 (QDQ, "
        "per-channel weights, MinMax calibration on 32 training images); OpenVINO: NNCF "
        "post-training quantization (default preset, same 32 images; the detector's softmax, "
        "decoding and NMS kept in fp32). ReLU6 bounds every activation to [0, 6], so the "
        "ranges stay tight and 8 bits lose little."
    )
    return "## int8 against fp32\n\n" + header + "\n" + "\n".join(rows) + "\n\n" + note + pruning
