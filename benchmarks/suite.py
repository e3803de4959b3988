"""One run, one table: complexity, latency of every path, training and data throughput,
COCO evaluation time, int8 accuracy, and the fraction of the machine's matmul peak.

Run ``python -m benchmarks`` (``--quick`` for a smoke run on tiny inputs). Writes
``benchmarks/results.md``, ``results.json`` (every latency, in ms) and ``results.png``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import latency, throughput
from benchmarks.timing import SETTLE_S, fmt, markdown_table, met
from benchmarks.training import training_table

OUT_DIR = Path(__file__).parent


#: batch-1 latencies take this many times ``repeats`` runs: a batch-1 call is about 8x
#: shorter than a batch-8 one, and the targets judged at batch 1 (end-to-end/raw) are ratios
#: of two medians whose noise on this shared machine was +-4% with 9 runs
BATCH1_REPEATS = 3


@dataclass
class Options:
    """Settings of one suite run (see ``python -m benchmarks --help``)."""

    quick: bool = False
    threads: int = 2
    warmup: int = 2
    repeats: int = 9
    train_steps: int = 5
    loader_batches: int = 10
    coco_images: int = 5000
    output_dir: Path = OUT_DIR
    accuracy: dict[str, str] = field(default_factory=dict)  # kind -> checkpoint


def run(opts: Options) -> str:
    """Run every section and return the Markdown report (also written to disk)."""
    torch.set_num_threads(opts.threads)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    if opts.quick:
        opts.warmup, opts.repeats, opts.train_steps = 1, 3, 1
        opts.loader_batches, opts.coco_images = 2, 50
    sections = [_header(opts)]
    # The fp32 peak first, on a machine this suite has not loaded yet.
    busy = throughput.cpu_busy(1.0)
    peak = max(throughput.matmul_gflops(size) for size in (512, 1024))
    pairs = latency.build_pairs(opts.quick)
    sections.append(_complexity_section(pairs))
    lat = _latency(pairs, opts)
    sections.append(_latency_section(pairs, lat))
    sections.append(_guard("Export parity", _parity_section, opts))
    sections.append(_guard("Targets", _targets_section, pairs, lat))
    sections.append(_guard("Detector end-to-end", _end2end_section, pairs, lat))
    sections.append(_guard("PyTorch vs onnxruntime", _pytorch_vs_ort_section, pairs, lat))
    sections.append(_guard("Training throughput", _training_section, pairs, opts))
    sections.append(_guard("COCO evaluation time", _coco_section, opts))
    sections.append(_guard("Achieved throughput", _peak_section, pairs, lat, peak, busy))
    from benchmarks.gpu import gpu_section

    sections.append(_guard("GPU", gpu_section, pairs, opts.quick))
    if opts.accuracy:
        from benchmarks.accuracy import accuracy_section

        sections.append(_guard("int8 accuracy", accuracy_section, opts.accuracy, opts.threads))
    report = "\n\n".join(sections) + "\n"
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    (opts.output_dir / "results.md").write_text(report)
    timings = {f"{pairs[i].name} vs {pairs[i].peer_name}, batch {batch}": ms
               for (i, batch), ms in lat.items()}  # fmt: skip
    (opts.output_dir / "results.json").write_text(json.dumps(timings, indent=1) + "\n")
    _plot(pairs, lat, opts.output_dir / "results.png", opts.threads)
    return report


def _guard(title: str, fn: Any, *args: Any) -> str:
    """A section, or a note saying why it failed: one broken section must not lose the
    minutes of measurements made before it."""
    try:
        return fn(*args)
    except Exception as err:
        traceback.print_exc()
        return f"## {title}\n\nFailed: {type(err).__name__}: {err}"


def _header(opts: Options) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        "# mobilezoo benchmark\n\n"
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch {torch.__version__} and onnxruntime with {opts.threads} thread(s), "
        f"load average {load:.1f} at start. Latency: median of "
        f"{opts.repeats * BATCH1_REPEATS} (batch 1) or {opts.repeats} (batch 8) interleaved "
        f"runs after {opts.warmup} warm-ups, fp32 unless int8, each timed call after a "
        f"{SETTLE_S * 1000:.0f} ms pause (threads of the path before stop spinning). Compare "
        "ratios within this run: absolute times on a shared machine drift."
        + (" QUICK MODE: tiny inputs, numbers are meaningless." if opts.quick else "")
    )


def _complexity_section(pairs: list[latency.Pair]) -> str:
    rows = []
    seen = set()
    for pair in pairs:
        pair.complexity = latency.complexity(pair)
        c = pair.complexity
        if pair.name not in seen:
            seen.add(pair.name)
            rows.append([pair.name, pair.size, f"{c['params'] / 1e6:.3f}M",
                         f"{pair.paper[0] / 1e6:.2f}M", f"{c['madds'] / 1e9:.3f}G",
                         f"{pair.paper[1] / 1e9:.2f}G"])  # fmt: skip
        rows.append([pair.peer_name, pair.size, f"{c['peer_params'] / 1e6:.3f}M", "",
                     f"{c['peer_madds'] / 1e9:.3f}G", ""])  # fmt: skip
    header = ["model", "input", "params", "paper params", "MAdds", "paper MAdds"]
    return "## Size and multiply-adds\n\n" + markdown_table(header, rows)


def _latency(pairs: list[latency.Pair], opts: Options) -> dict[tuple[int, int], dict]:
    results: dict[tuple[int, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, pair in enumerate(pairs):
            calib = torch.randn(8, 3, pair.size, pair.size)
            files = latency.onnx_files(pair, Path(tmp), calib)
            for batch in (1, 8):
                print(f"timing {pair.name} vs {pair.peer_name}, batch {batch}", flush=True)
                repeats = opts.repeats * (BATCH1_REPEATS if batch == 1 else 1)
                results[(i, batch)] = latency.time_pair(
                    pair, files, batch, opts.threads, opts.warmup, repeats
                )
    return results


#: (label, our key, peer key) of the latency table; detectors add their end-to-end rows
_PATHS = [
    ("eager", "eager", "peer_eager"),
    ("fast, eager (folded BN, NHWC)", "fast_eager", "peer_eager"),
    ("fast, compiled (+ frozen TorchScript)", "fast", "peer_eager"),
    ("onnxruntime fp32", "ort", "peer_ort"),
    ("onnxruntime int8", "int8", "peer_ort"),
    ("OpenVINO fp32", "ov", "ov_peer"),
    ("OpenVINO int8 (NNCF)", "ov_int8", "ov_peer"),
]
_DETECTOR_PATHS = [
    ("fast, compiled, raw network", "fast_raw", "peer_eager"),
    ("onnxruntime fp32 end-to-end (NMS)", "ort_end2end", "peer_ort"),
    ("onnxruntime int8 end-to-end", "int8_end2end", "peer_ort"),
    ("OpenVINO fp32 end-to-end (NMS)", "ov_end2end", "ov_peer"),
    ("OpenVINO int8 end-to-end", "ov_end2end_int8", "ov_peer"),
]
_PEER_LABEL = {"peer_eager": "eager", "peer_ort": "onnxruntime fp32", "ov_peer": "OpenVINO fp32"}


def _latency_section(pairs: list[latency.Pair], lat: dict) -> str:
    header = ["model", "batch", "path", "ours ms", "peer", "peer path", "peer ms",
              "peer / ours"]  # fmt: skip
    rows = []
    for i, pair in enumerate(pairs):
        for batch in (1, 8):
            r = lat[(i, batch)]
            paths = _PATHS + (_DETECTOR_PATHS if pair.kind == "detector" else [])
            for label, ours, peer in paths:
                if ours not in r:
                    continue
                if pair.kind == "detector" and ours in ("ort", "int8", "ov", "ov_int8"):
                    label += " raw"
                peer_label = _PEER_LABEL[peer]
                if pair.kind == "detector" and peer != "peer_eager":
                    peer_label += " raw"
                peer_ms = r.get(peer)
                ratio = fmt(peer_ms / r[ours], 2) if peer_ms else "-"
                rows.append([pair.name, batch, label, fmt(r[ours]), pair.peer_name,
                             peer_label, fmt(peer_ms), ratio])  # fmt: skip
    note = (
        "Detector peers in onnxruntime and OpenVINO run their raw network (backbone + head, "
        "no resize and no NMS: torchvision's NMS loops over images and does not export with "
        "a dynamic batch); eager detectors include post-processing (and torchvision's "
        "resize), as does our fast path unless marked raw. OpenVINO runs in fp32 "
        "(INFERENCE_PRECISION_HINT f32, no bf16), latency hint. onnxruntime sessions run "
        "without spin-waiting (`ort_session(spinning=False)`): each session has its own "
        "threads, and threads spinning after one session's run would take the cores from "
        "the next path timed."
    )
    return "## CPU latency (ms)\n\n" + markdown_table(header, rows) + "\n\n" + note


def _parity_section(opts: Options) -> str:
    from benchmarks.export_parity import HEADER, parity_rows, sources

    rows = parity_rows(sources(opts.accuracy, opts.quick))
    passed = sum(row[-1] == "PASS" for row in rows)
    note = (
        f"{passed} of {len(rows)} exported files pass. Each builder and each trained "
        "checkpoint given (`--*_ckpt`) exported as `mobilezoo export --format openvino` does "
        '(fp32; the OpenVINO IR is converted from the checked ONNX file; input size "default" '
        "is the export's default for that model) and run on 2 random images; a file passes "
        "when every output is "
        "within 1e-4 absolute plus 1e-4 relative of PyTorch, and an end-to-end detector keeps "
        "the same detections (candidates whose scores tie exactly may be swapped; counted)."
    )
    return "## Export parity (ONNX and OpenVINO)\n\n" + markdown_table(HEADER, rows) + "\n\n" + note


def _end2end_section(pairs: list[latency.Pair], lat: dict) -> str:
    """End-to-end detector (decoding, pruning, NMS) against the raw network, per runtime."""
    i = next(k for k, p in enumerate(pairs) if p.kind == "detector")
    rows = []
    for batch in (1, 8):
        r = lat[(i, batch)]
        for runtime, e2e, raw in (("PyTorch fast, compiled", "fast", "fast_raw"),
                                  ("onnxruntime fp32", "ort_end2end", "ort"),
                                  ("onnxruntime int8", "int8_end2end", "int8"),
                                  ("OpenVINO fp32", "ov_end2end", "ov"),
                                  ("OpenVINO int8", "ov_end2end_int8", "ov_int8")):  # fmt: skip
            if e2e not in r or raw not in r:
                continue
            ratio = r[e2e] / r[raw]
            target = met(ratio, 1.15) if batch == 1 and "int8" not in runtime else ""
            rows.append([runtime, batch, fmt(r[raw]), fmt(r[e2e]), f"{ratio:.2f}x", target])
    header = ["runtime", "batch", "raw ms", "end-to-end ms", "end-to-end / raw",
              "target <= 1.15x (batch 1, fp32)"]  # fmt: skip
    return "## Detector: end-to-end against the raw network\n\n" + markdown_table(header, rows)


def _pytorch_vs_ort_section(pairs: list[latency.Pair], lat: dict) -> str:
    rows = []
    for i, pair in enumerate(pairs[:3]):
        for batch in (1, 8):
            r = lat[(i, batch)]
            ort_key = "ort_end2end" if pair.kind == "detector" else "ort"
            ratio = r["fast"] / r[ort_key]
            eager_ratio = r["fast_eager"] / r[ort_key]
            rows.append([pair.name, batch, fmt(r["fast"]), fmt(r[ort_key]),
                         f"{ratio:.2f}x", f"{eager_ratio:.2f}x", met(ratio, 1.25)])  # fmt: skip
    header = ["model", "batch", "PyTorch fast, compiled ms", "onnxruntime fp32 ms",
              "compiled / onnxruntime", "eager fast / onnxruntime", "target <= 1.25x"]  # fmt: skip
    note = "Detector: both end-to-end (network, decoding, pruning, NMS)."
    return (
        "## PyTorch fast path against onnxruntime\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + note
    )


def _targets_section(pairs: list[latency.Pair], lat: dict) -> str:
    cls8, cls1 = lat[(0, 8)], lat[(0, 1)]
    det1 = lat[(1, 1)]
    det = pairs[1].complexity
    ours_per_madd = det1["ort"] / det["madds"]
    peer_per_madd = det1["peer_ort"] / det["peer_madds"]
    rows = [
        ["fast eager >= 2.5x faster than torchvision eager mobilenet_v2, batch 8",
         f"{cls8['peer_eager'] / cls8['fast']:.2f}x"],
        ["fast eager within 2x of our onnxruntime, batch 1",
         f"{cls1['fast'] / cls1['ort']:.2f}x slower"],
        ["our onnxruntime within 1.1x of torchvision mobilenet_v2 in onnxruntime, batch 1",
         f"{cls1['ort'] / cls1['peer_ort']:.2f}x"],
        ["our onnxruntime within 1.1x of torchvision mobilenet_v2 in onnxruntime, batch 8",
         f"{cls8['ort'] / cls8['peer_ort']:.2f}x"],
        ["SSDLite-MobileNetV2 onnxruntime ms per GMAdd vs SSDLite-MobileNetV3, batch 1",
         f"{ours_per_madd * 1e9:.1f} vs {peer_per_madd * 1e9:.1f} "
         f"({ours_per_madd / peer_per_madd:.2f}x)"],
    ]  # fmt: skip
    for runtime, e2e, raw in (("onnxruntime", "ort_end2end", "ort"),
                              ("OpenVINO", "ov_end2end", "ov")):  # fmt: skip
        if e2e in det1:
            ratio = det1[e2e] / det1[raw]
            rows.append([f"detector end-to-end <= 1.15x raw in {runtime}, batch 1",
                         f"{ratio:.2f}x ({met(ratio, 1.15)})"])  # fmt: skip
    for i, pair in enumerate(pairs[:3]):
        ort_key = "ort_end2end" if pair.kind == "detector" else "ort"
        worst = max(lat[(i, b)]["fast"] / lat[(i, b)][ort_key] for b in (1, 8))
        rows.append([f"{pair.name}: PyTorch fast path <= 1.25x onnxruntime, batch 1 and 8",
                     f"worst {worst:.2f}x ({met(worst, 1.25)})"])  # fmt: skip
    if "ov" in cls1:
        best = min(("ort", "ov"), key=lambda k: cls1[k])
        rows.append(["fastest fp32 runtime for the classifier, batch 1",
                     f"{'OpenVINO' if best == 'ov' else 'onnxruntime'} "
                     f"({cls1['ort'] / cls1['ov']:.2f}x onnxruntime / OpenVINO)"])  # fmt: skip
    return "## Targets\n\n" + markdown_table(["target", "measured"], rows)


def _training_section(pairs: list[latency.Pair], opts: Options) -> str:
    table = training_table(pairs, opts.quick, opts.train_steps)
    return table + "\n\n" + _loader_section(pairs, opts)


def _loader_section(pairs: list[latency.Pair], opts: Options) -> str:
    from tasks.data.demo.classification import DemoClassificationDataModule
    from tasks.data.demo.detection import DemoDetectionDataModule
    from tasks.data.demo.segmentation import DemoSegmentationDataModule
    from tasks.data.demo.shapes import SceneOptions

    modules = {
        "classifier": DemoClassificationDataModule(
            train_per_class=10 if opts.quick else 100, val_per_class=2
        ),
        "detector": DemoDetectionDataModule(
            scene=SceneOptions(num_train=20 if opts.quick else 320, num_val=4), image_size=128
        ),
        "segmenter": DemoSegmentationDataModule(
            train_images=20 if opts.quick else 240, val_images=4
        ),
    }
    rows = []
    real = tempfile.TemporaryDirectory()
    real_sizes = {
        "detector": DemoDetectionDataModule(
            root=f"{real.name}/det", image_size=320, augmentation="ssd",
            scene=SceneOptions(num_train=8 if opts.quick else 48, num_val=2, generated_size=320),
        ),
        "segmenter": DemoSegmentationDataModule(
            root=f"{real.name}/seg", train_images=8 if opts.quick else 32, val_images=2,
            generated_size=513, crop_size=513,
        ),
    }  # fmt: skip
    jobs = [(p, modules[p.kind]) for p in pairs[:3]]
    jobs += [(p, real_sizes[p.kind]) for p in pairs[:3] if p.kind in real_sizes]
    for pair, dm in jobs:
        per_worker, batch, side = throughput.loader_images_per_second(dm, opts.loader_batches)
        step = throughput.train_images_per_second(
            pair.kind, pair.model, False, side, min(batch, 8), opts.train_steps
        )
        pair.model.eval()
        # Loading one image takes 1/per_worker s on one worker; training on it 1/step s.
        fraction = step / per_worker
        rows.append([type(dm).__name__, f"{side}x{side}", fmt(per_worker, 0),
                     f"{1e3 / per_worker:.1f}", fmt(step, 1), f"{fraction:.0%}"])  # fmt: skip
    real.cleanup()
    note = (
        "Fraction = time to load and augment an image on one worker / time to train on it "
        "(same machine, same threads). Below 100% one loader worker keeps up with training "
        "(with `num_workers >= 1` loading overlaps the step); above, add workers."
    )
    header = ["data module (train, augmented)", "image", "img/s per worker", "ms per image",
              "train img/s (ours, same size)", "load / train time"]  # fmt: skip
    return "## Data loading\n\n" + markdown_table(header, rows) + "\n\n" + note


def _coco_section(opts: Options) -> str:
    rows = []
    for backend in ("pycocotools", "faster_coco_eval"):
        try:
            seconds = throughput.coco_eval_seconds(opts.coco_images, backend)
        except ImportError:
            continue
        rows.append([backend, opts.coco_images, opts.coco_images * 100, fmt(seconds, 1)])
    header = ["backend", "images", "detections", "seconds (evaluate + accumulate + summarize)"]
    return "## COCO evaluation time\n\n" + markdown_table(header, rows)


def _peak_section(pairs: list[latency.Pair], lat: dict, peak: float, busy: float | None) -> str:
    fp32 = ("eager", "fast", "ort", "ov")
    rows = []
    for i, pair in enumerate(pairs[:3]):
        r = lat[(i, 8)]
        key = min((k for k in fp32 if k in r), key=lambda k: r[k])
        gflops = 2 * pair.complexity["madds"] * 8 / (r[key] / 1e3) / 1e9
        int8 = min((r[k] for k in ("int8", "ov_int8") if k in r), default=None)
        rows.append([pair.name, key, fmt(r[key]), fmt(gflops, 1), f"{gflops / peak:.0%}",
                     fmt(int8)])  # fmt: skip
    header = ["model (batch 8)", "fastest fp32 path", "ms", "achieved GFLOP/s",
              f"fraction of fp32 matmul peak ({peak:.0f} GFLOP/s)", "fastest int8 ms"]  # fmt: skip
    if busy is None:
        state = "the machine's load could not be read (no /proc/stat), so the peak may not be representative"
    elif busy < 0.1:
        state = f"the CPUs were idle (busy {busy:.0%} in the second before), so the peak is representative"
    else:
        state = (
            f"the CPUs were NOT idle (busy {busy:.0%} in the second before), so the peak may be low"
        )
    note = (
        "The fp32 peak is the fastest of a 512 and a 1024 square matmul (MKL) and the same "
        "products as 1x1 convolutions (oneDNN), measured at the start of the run "
        f"({torch.get_num_threads()} threads), before anything else of the suite ran; {state}. "
        "int8 paths are listed apart: integer arithmetic is not measured against an fp32 peak."
    )
    return "## Achieved throughput\n\n" + markdown_table(header, rows) + "\n\n" + note


def _plot(pairs: list[latency.Pair], lat: dict, path: Path, threads: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written")
        return
    keys = [("eager", "eager"), ("fast_eager", "fast, eager"), ("fast", "fast, compiled"),
            ("ort", "onnxruntime fp32"), ("int8", "onnxruntime int8"), ("ov", "OpenVINO fp32"),
            ("ov_int8", "OpenVINO int8")]  # fmt: skip
    peer_keys = [("peer_eager", "peer eager"), ("peer_ort", "peer onnxruntime"),
                 ("ov_peer", "peer OpenVINO")]  # fmt: skip
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    # A detector's runtime rows: its end-to-end graphs, like its PyTorch rows (the peer's
    # exported graph is its raw network: torchvision's NMS does not export)
    end2end = {"ort": "ort_end2end", "int8": "int8_end2end", "ov": "ov_end2end",
               "ov_int8": "ov_end2end_int8"}  # fmt: skip
    for ax, i in zip(axes, range(3), strict=True):
        pair = pairs[i]
        r = lat[(i, 1)]
        detector = pair.kind == "detector"
        ours = [(name, r[end2end.get(k, k) if detector else k]) for k, name in keys
                if (end2end.get(k, k) if detector else k) in r]  # fmt: skip
        peers = [(name + (" (raw network)" if detector and k != "peer_eager" else ""), r[k])
                 for k, name in peer_keys if k in r]  # fmt: skip
        labels = [n for n, _ in ours + peers]
        values = [v for _, v in ours + peers]
        colors = ["#1f77b4"] * len(ours) + ["#999999"] * len(peers)
        bars = ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
        ax.set_xlim(0, max(values) * 1.15)  # room for the labels
        ax.set_title(f"{pair.name}{' (end-to-end)' if detector else ''}\nvs {pair.peer_name}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel(f"ms, batch 1, {threads} thread(s) (shorter is faster)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
