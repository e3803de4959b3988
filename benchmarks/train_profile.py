"""Where one CPU training step goes: forward, loss, backward and optimizer times, and the
most expensive operators, for our detector and segmenter and their torchvision peers.

Run ``python -m benchmarks.train_profile`` (``--size_seg 257`` for a quicker look; 513 and
320 are the real sizes). Prints Markdown tables; writes nothing. Each phase is timed with
``time.perf_counter`` over ``--steps`` steps (median) after one warm-up step, then one more
step runs under ``torch.profiler`` for the operator table.

``--channels_last`` adds segmenter rows with the images in channels-last (NHWC) memory
format, the layout oneDNN's depthwise kernels prefer: what ``SegmentationTask(channels_last=
True)`` does (the weights stay NCHW). The convolutions then sum in another order, which
changes outputs and gradients at the level of float rounding, so it is opt-in.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.throughput import random_targets
from benchmarks.timing import markdown_table

PHASES = ("forward", "loss", "backward", "optimizer")


@dataclass
class Step:
    """One training step split in phases: ``forward(x)`` gives outputs, ``loss(outputs)``
    a scalar. torchvision detectors compute the loss inside their forward, so for them
    ``forward`` returns the loss dict and ``loss`` only sums it."""

    forward: Callable[[], object]
    loss: Callable[[object], Tensor]


def build_step(kind: str, model: nn.Module, peer: bool, x: Tensor) -> Step:
    """The same loss as ``benchmarks.throughput`` (random data, fixed seed), in phases."""
    batch, size = x.shape[0], x.shape[-1]
    if kind == "segmenter":
        y = torch.randint(0, 21, (batch, size, size), generator=torch.Generator().manual_seed(0))

        def seg_loss(out: object) -> Tensor:
            logits = out["out"] if peer else out  # type: ignore[index]
            return F.cross_entropy(logits, y)  # type: ignore[arg-type]

        return Step(lambda: model(x), seg_loss)
    if peer:
        targets = random_targets(batch, size, 90, 1)
        images = list(x)
        return Step(
            lambda: model(images, targets),
            lambda out: sum(out.values()),  # type: ignore[attr-defined]
        )
    targets = random_targets(batch, size, 80, 0)
    return Step(
        lambda: model.forward_outputs(x),  # type: ignore[operator]
        lambda out: model.compute_loss(out, targets)["loss"],  # type: ignore[operator]
    )


def phase_seconds(
    step: Step, model: nn.Module, steps: int
) -> tuple[dict[str, float], torch.profiler.profile]:
    """Median seconds of each phase over ``steps`` SGD steps (after one warm-up step), and
    the profile of one further step."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def run(times: dict[str, list[float]] | None) -> None:
        marks = [time.perf_counter()]
        optimizer.zero_grad(set_to_none=True)
        out = step.forward()
        marks.append(time.perf_counter())
        loss = step.loss(out)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        optimizer.step()
        marks.append(time.perf_counter())
        if times is not None:
            for name, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True):
                times[name].append(end - start)

    run(None)
    times: dict[str, list[float]] = {name: [] for name in PHASES}
    for _ in range(steps):
        run(times)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(None)
    model.eval()
    return {name: statistics.median(v) for name, v in times.items()}, prof


def top_ops(prof: torch.profiler.profile, rows: int) -> list[list[object]]:
    """``[[op, ms, share %, calls]]`` of the most expensive operators by self CPU time."""
    events = [e for e in prof.key_averages() if not e.key.startswith("autograd::")]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        [e.key, e.self_cpu_time_total / 1e3, 100.0 * e.self_cpu_time_total / total, e.count]
        for e in events[:rows]
    ]


def _models(size_det: int) -> list[tuple[str, str, nn.Module, bool]]:
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    from heads.deeplabv3 import deeplabv3_mobilenet_v2
    from heads.ssdlite import ssdlite_mobilenet_v2

    torch.manual_seed(0)
    kw = {"weights": None, "weights_backbone": None}
    tv_det = ssdlite320_mobilenet_v3_large(num_classes=91, **kw)
    tv_det.transform.min_size, tv_det.transform.max_size = (size_det,), size_det
    return [
        ("SSDLite-MobileNetV2 (ours)", "detector", ssdlite_mobilenet_v2(num_classes=80), False),
        ("torchvision ssdlite320_mobilenet_v3_large", "detector", tv_det, True),
        ("DeepLabv3-MobileNetV2 OS16 (ours)", "segmenter",
         deeplabv3_mobilenet_v2(num_classes=21), False),
        ("torchvision deeplabv3_mobilenet_v3_large", "segmenter",
         deeplabv3_mobilenet_v3_large(num_classes=21, **kw), True),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_profile", description=__doc__)
    parser.add_argument("--size_det", type=int, default=320)
    parser.add_argument("--size_seg", type=int, default=513)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--top", type=int, default=8, help="operators listed per model")
    parser.add_argument("--kinds", nargs="+", default=["detector", "segmenter"],
                        choices=["detector", "segmenter"])  # fmt: skip
    parser.add_argument("--channels_last", action="store_true",
                        help="add channels-last rows for the segmenters (a what-if)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    phase_rows, op_tables = [], []
    for name, kind, model, peer in _models(args.size_det):
        if kind not in args.kinds:
            continue
        size = args.size_det if kind == "detector" else args.size_seg
        layouts = [False, True] if args.channels_last and kind == "segmenter" else [False]
        for channels_last in layouts:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
            x = x.contiguous(memory_format=fmt)
            label = name + (" channels-last" if channels_last else "")
            print(f"profiling {label} at {size}", flush=True)
            seconds, prof = phase_seconds(build_step(kind, model, peer, x), model, args.steps)
            total = sum(seconds.values())
            phase_rows.append(
                [label, size, args.batch]
                + [f"{1e3 * seconds[p]:.0f} ({100 * seconds[p] / total:.0f}%)" for p in PHASES]
                + [f"{1e3 * total:.0f}", f"{args.batch / total:.2f}"]
            )
            op_tables.append(
                f"**{label}**, {size} px, batch {args.batch}\n\n"
                + markdown_table(
                    ["operator", "self ms", "share %", "calls"], top_ops(prof, args.top)
                )
            )
    header = ["model", "input", "batch", *[f"{p} ms" for p in PHASES], "step ms", "img/s"]
    print("\n## Training step by phase (median)\n\n" + markdown_table(header, phase_rows))
    print("\n## Top operators (self CPU time, one profiled step)\n\n" + "\n\n".join(op_tables))


if __name__ == "__main__":
    main()
