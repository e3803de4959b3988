"""The GPU section of the suite: runs only when CUDA is present, nothing else needs a GPU.

Training images/s with automatic mixed precision (bf16 where supported, else fp16 with a
grad scaler) and channels-last, and inference latency at batch 1 and 32 (AMP,
channels-last, BatchNorm folded), for SSDLite and Mobile DeepLabv3 against torchvision's
SSDLite-MobileNetV3 and DeepLabv3-MobileNetV3, at 320 and 513 pixels. Every function
takes the device, so the code paths run (and are tested) on a CPU too.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import throughput
from benchmarks.timing import fmt, markdown_table, median_ms
from heads.inference import optimize_for_inference


def _device_ms(fn: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    """Median ms of ``fn``: CUDA events on a GPU (kernels run asynchronously), else wall time."""
    if device.type != "cuda":
        return median_ms(fn, warmup, repeats)
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _amp_dtype(device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        return torch.bfloat16  # CPU autocast's type
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def train_images_per_second(
    kind: str, model: nn.Module, peer: bool, size: int, batch: int, steps: int,
    device: torch.device | str = "cuda",
) -> float:  # fmt: skip
    """Images/s of AMP + channels-last SGD steps on ``device`` (median step after warm-up)."""
    device = torch.device(device)
    model = copy.deepcopy(model).to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    if kind == "segmenter":
        y = torch.randint(0, 21, (batch, size, size), device=device)

        def loss() -> Tensor:
            out = model(x)
            return F.cross_entropy((out["out"] if peer else out).float(), y)
    elif peer:
        targets, images = throughput.random_targets(batch, size, 90, 1, device), list(x)

        def loss() -> Tensor:
            return sum(model(images, targets).values())
    else:
        targets = throughput.random_targets(batch, size, 80, 0, device)

        def loss() -> Tensor:
            return model.compute_loss(model.forward_outputs(x), targets)["loss"]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            value = loss()
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()

    ms = _device_ms(step, 3, steps, device)
    return batch / (ms / 1e3)


def inference_ms(
    model: nn.Module, peer: bool, size: int, batch: int, repeats: int,
    device: torch.device | str = "cuda",
) -> float:  # fmt: skip
    """Median ms of one AMP, channels-last forward (ours: BatchNorm folded, eager)."""
    device = torch.device(device)
    if peer:
        net = copy.deepcopy(model).to(device, memory_format=torch.channels_last).eval()
    else:
        net = optimize_for_inference(model, compiled=False).to(device)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    dtype = _amp_dtype(device)
    arg: Any = list(x) if peer and hasattr(model, "anchor_generator") else x

    def run() -> object:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
            return net(arg)

    return _device_ms(run, 3, repeats, device)


def gpu_section(pairs: list[Any], quick: bool) -> str:
    """The Markdown section; says so when no GPU is present."""
    title = "## GPU (CUDA, AMP, channels-last)\n\n"
    if not torch.cuda.is_available():
        return title + "No CUDA device in this run: the GPU section was not run."

    name = torch.cuda.get_device_name(0)
    device = torch.device("cuda")
    train_rows, infer_rows = device_rows(pairs, quick, device)
    text = title + f"{name}, torch {torch.__version__}, AMP dtype {_amp_dtype(device)}.\n\n"
    text += markdown_table(["model", "input", "batch", "ours train img/s", "peer", "peer img/s",
                    "ours / peer", "per MAdd"], train_rows)  # fmt: skip
    text += "\n\n" + markdown_table(["model", "batch", "ours ms", "peer", "peer ms", "peer / ours"],
                            infer_rows)  # fmt: skip
    return text


def device_rows(
    pairs: list[Any], quick: bool, device: torch.device
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Training and inference rows of the detector and segmenter pairs on ``device``."""

    steps, repeats = (2, 3) if quick else (10, 20)
    train_rows, infer_rows = [], []
    for pair in [p for p in pairs[:3] if p.kind in ("detector", "segmenter")]:
        batch = 32 if pair.kind == "detector" else 8
        batch = 2 if quick else batch
        ours = train_images_per_second(
            pair.kind, pair.model, False, pair.size, batch, steps, device
        )
        peer = train_images_per_second(pair.kind, pair.peer, True, pair.size, batch, steps, device)
        madds = pair.complexity.get("madds", 1.0) / pair.complexity.get("peer_madds", 1.0)
        train_rows.append([pair.name, pair.size, batch, fmt(ours, 1), pair.peer_name,
                           fmt(peer, 1), fmt(ours / peer, 2),
                           fmt(ours * madds / peer, 2)])  # fmt: skip
        for b in (1, 2) if quick else (1, 32):
            o = inference_ms(pair.model, False, pair.size, b, repeats, device)
            p = inference_ms(pair.peer, True, pair.size, b, repeats, device)
            infer_rows.append([pair.name, b, fmt(o, 2), pair.peer_name, fmt(p, 2),
                               fmt(p / o, 2)])  # fmt: skip
        pair.model.eval()
    return train_rows, infer_rows
