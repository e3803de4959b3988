"""Inference latency of the zoo's models and torchvision's peers, every path in one run.

Each model is timed in eager PyTorch, in the fast path (``heads.inference``: folded eager,
and compiled into a frozen TorchScript graph), in onnxruntime fp32 and int8, and in
OpenVINO fp32 and int8 (NNCF); each peer in eager PyTorch, onnxruntime and OpenVINO. The
timings of one
model and its peer are interleaved (one call of each in turn, then the median per
candidate), so load from other processes on a shared machine hits both alike and their
ratio stays meaningful even when absolute times drift.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones.complexity import count_madds, count_parameters
from benchmarks.timing import interleaved_medians, settle_batchnorm
from heads.inference import DetectorEnd2End, RawGraph, optimize_for_inference
from tasks.export import export_onnx, ort_session, quantize_int8


def _openvino_available() -> bool:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


OPENVINO = _openvino_available()


@dataclass
class Pair:
    """One of our models and its torchvision peer, with what is needed to time them.

    Attributes:
        name: row label of our model.
        kind: ``classifier``, ``detector`` or ``segmenter``.
        model: our model (eval mode).
        peer_name: row label of the peer.
        peer: the peer (eval mode).
        size: square input side.
        paper: (params, MAdds) the paper reports for our model.
        peer_graph: what the peer's ONNX file computes (its raw network for detectors).
    """

    name: str
    kind: str
    model: nn.Module
    peer_name: str
    peer: nn.Module
    size: int
    paper: tuple[float, float]
    peer_graph: nn.Module | None = None
    complexity: dict[str, float] = field(default_factory=dict)


class _PeerDetectorRaw(nn.Module):
    """torchvision SSDLite without its resize/normalize transform and NMS: backbone + head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = model.backbone, model.head

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.head(list(self.backbone(images).values()))
        return out["cls_logits"], out["bbox_regression"]


class _PeerSegmenter(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)["out"]


def build_pairs(quick: bool) -> list[Pair]:
    """The three (ours, peer) pairs at the paper's input sizes (tiny sizes when ``quick``)."""
    from torchvision.models import mobilenet_v2
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.segmentation import (
        deeplabv3_mobilenet_v3_large,
        lraspp_mobilenet_v3_large,
    )

    from heads.classifier import mobilenet_v2_classifier
    from heads.deeplabv3 import deeplabv3_mobilenet_v2
    from heads.ssdlite import ssdlite_mobilenet_v2

    torch.manual_seed(0)
    cls, det, seg = (64, 128, 65) if quick else (224, 320, 513)
    kw = {"weights": None, "weights_backbone": None}
    tv_det = ssdlite320_mobilenet_v3_large(num_classes=91, **kw).eval()
    if quick:
        tv_det.transform.min_size, tv_det.transform.max_size = (det,), det
    pairs = [
        Pair("MobileNetV2 classifier (ours)", "classifier",
             mobilenet_v2_classifier(num_classes=1000), "torchvision mobilenet_v2",
             mobilenet_v2(weights=None), cls, (3.47e6, 300e6)),
        Pair("SSDLite-MobileNetV2 (ours)", "detector", ssdlite_mobilenet_v2(num_classes=80),
             "torchvision ssdlite320_mobilenet_v3_large", tv_det, det, (4.3e6, 0.8e9),
             _PeerDetectorRaw(tv_det)),
        Pair("DeepLabv3-MobileNetV2 OS16 (ours)", "segmenter",
             deeplabv3_mobilenet_v2(num_classes=21), "torchvision deeplabv3_mobilenet_v3_large",
             deeplabv3_mobilenet_v3_large(num_classes=21, **kw), seg, (2.11e6, 2.75e9)),
        Pair("DeepLabv3-MobileNetV2 OS16 (ours)", "segmenter", None,  # type: ignore[arg-type]
             "torchvision lraspp_mobilenet_v3_large",
             lraspp_mobilenet_v3_large(num_classes=21, **kw), seg, (2.11e6, 2.75e9)),
    ]  # fmt: skip
    pairs[3].model = pairs[2].model
    for pair in pairs:
        pair.model.eval()
        pair.peer.eval()
        settle_batchnorm(pair.model, pair.size)
        if pair.kind == "segmenter":
            pair.peer_graph = _PeerSegmenter(pair.peer)
        pair.peer_graph = pair.peer_graph or pair.peer
    return pairs


def complexity(pair: Pair) -> dict[str, float]:
    """Parameters and MAdds (batch 1) of our model and of the peer."""
    x = torch.randn(1, 3, pair.size, pair.size)
    ours = pair.model.forward_raw if pair.kind == "detector" else pair.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "params": count_parameters(pair.model),
            "madds": _madds(pair.model, ours, x),
            "peer_params": count_parameters(pair.peer),
            "peer_madds": count_madds(pair.peer_graph, x),
        }


def _madds(model: nn.Module, fn: Callable[[Tensor], object], x: Tensor) -> int:
    if fn is model:
        return count_madds(model, x)

    class _Call(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, images: Tensor) -> object:
            return fn(images)

    return count_madds(_Call(), x)


def onnx_files(pair: Pair, folder: Path, calibration: Tensor) -> dict[str, Path]:
    """Export ours (fp32, int8; detectors raw and end-to-end) and the peer to ``folder``."""
    size = (pair.size, pair.size)
    stem = pair.kind
    files: dict[str, Path] = {}
    graphs: dict[str, tuple[nn.Module, str]]
    if pair.kind == "detector":
        graphs = {
            "raw": (RawGraph(pair.model, size), "raw"),
            "end2end": (DetectorEnd2End(pair.model, size), "end2end"),
        }
    else:
        graphs = {"raw": (pair.model, pair.kind)}
    for key, (graph, form) in graphs.items():
        path = folder / f"{stem}_{key}.onnx"
        if not path.exists():
            export_onnx(graph, form, path, size)
            quantize_int8(path, path.with_name(path.stem + "_int8.onnx"), calibration, pair.kind)
        files[key] = path
        files[key + "_int8"] = path.with_name(path.stem + "_int8.onnx")
    peer_path = folder / f"peer_{pair.peer_name.split()[-1]}.onnx"
    if not peer_path.exists():
        _export_peer(pair.peer_graph, peer_path, size)
    files["peer"] = peer_path
    if OPENVINO:
        from tasks.export.openvino import export_openvino, quantize_openvino_int8

        for key in [k for k in files if not k.endswith("_int8")]:
            xml = files[key].with_suffix(".xml")
            if not xml.exists():
                export_openvino(files[key], xml)
                if key != "peer":
                    int8 = xml.with_name(xml.stem + "_int8.xml")
                    quantize_openvino_int8(xml, int8, list(calibration), pair.kind)
            files["ov_" + key] = xml
            if key != "peer":
                files["ov_" + key + "_int8"] = xml.with_name(xml.stem + "_int8.xml")
    return files


def _export_peer(graph: nn.Module, path: Path, size: tuple[int, int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.eval(), (torch.randn(1, 3, *size),), str(path), dynamo=False,
            input_names=["images"], dynamic_axes={"images": {0: "batch"}}, opset_version=17,
        )  # fmt: skip


def time_pair(
    pair: Pair, files: dict[str, Path], batch: int, threads: int, warmup: int, repeats: int
) -> dict[str, float]:
    """Median ms of every path of ``pair`` at ``batch``, interleaved."""
    x = torch.randn(batch, 3, pair.size, pair.size)
    xn = x.numpy()
    fast = optimize_for_inference(pair.model)
    fast_eager = optimize_for_inference(pair.model, compiled=False)
    sessions = {
        k: ort_session(v, threads, spinning=False) for k, v in files.items() if v.suffix == ".onnx"
    }

    def ort(key: str) -> Callable[[], object]:
        return lambda: sessions[key].run(None, {"images": xn})

    def eager(model: nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return model(x)

        return run

    cands = {
        "eager": eager(pair.model),
        "fast_eager": lambda: fast_eager(x),
        "fast": lambda: fast(x),
        "ort": ort("raw"),
        "int8": ort("raw_int8"),
        "peer_eager": eager(pair.peer),
        "peer_ort": ort("peer"),
    }
    if pair.kind == "detector":
        cands["ort_end2end"] = ort("end2end")
        cands["int8_end2end"] = ort("end2end_int8")
        xc = x.contiguous(memory_format=torch.channels_last)
        fast(x)  # traces the network for this shape
        graph = fast._graph(xc)

        def fast_raw() -> object:
            with torch.inference_mode():
                return graph(xc) if graph is not None else fast.model.forward_raw(xc)

        cands["fast_raw"] = fast_raw
    if "ov_raw" in files:
        from tasks.export.openvino import OpenVINORunner

        for key in [k for k in files if k.startswith("ov_")]:
            runner = OpenVINORunner(files[key], threads)
            runner.compiled_for(xn.shape)  # compiled for this batch, as users run it
            name = {"ov_raw": "ov", "ov_raw_int8": "ov_int8"}.get(key, key)
            cands[name] = lambda r=runner: r(xn)
    with torch.inference_mode(False), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return interleaved_medians(cands, warmup, repeats)
