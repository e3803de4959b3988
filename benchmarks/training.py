"""The training-throughput table: our models against their torchvision peers, one full SGD
step each, in turn, same batch and threads.

``python -m benchmarks.training`` prints it alone (``benchmarks.suite`` puts it in the
whole run's results).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from benchmarks import latency, throughput
from benchmarks.timing import fmt, interleaved_medians, markdown_table, met


def training_table(pairs: list[latency.Pair], quick: bool, steps: int) -> str:
    """The training-throughput table of the first three pairs (and channels-last rows for
    the detector and the segmenter), as Markdown with its note: median of ``steps`` steps,
    tiny batches when ``quick``. ``pair.complexity`` must be set."""
    rows = []
    batch = 2 if quick else 4
    jobs = [(pair, False) for pair in pairs[:3]]
    jobs += [(p, True) for p in pairs[:3] if p.kind != "classifier"]  # the opt-in layout
    for pair, channels_last in jobs:
        layout = ", channels-last" if channels_last else ""
        print(f"training steps{layout}: {pair.name} and {pair.peer_name}", flush=True)
        step_of = {
            name: throughput.train_step(pair.kind, model, is_peer, pair.size, batch, channels_last)
            for name, model, is_peer in (("ours", pair.model, False), ("peer", pair.peer, True))
        }
        ms = interleaved_medians(step_of, warmup=1, repeats=steps)
        pair.model.eval()
        pair.peer.eval()
        ours, peer = (1000 * batch / ms[name] for name in ("ours", "peer"))
        c = pair.complexity
        per_madd = ours * c["madds"] / (peer * c["peer_madds"])
        target = met(per_madd, 1.0, at_most=False) if pair.kind != "classifier" else ""
        rows.append([pair.name + layout, pair.size, batch, fmt(ours, 2), pair.peer_name + layout,
                     fmt(peer, 2), fmt(ours / peer, 2), f"{per_madd:.2f}x", target])  # fmt: skip
    text = "## Training throughput (one SGD step: forward, loss, backward, update)\n\n"
    text += markdown_table(["model", "input", "batch", "ours img/s", "peer", "peer img/s",
                    "ours / peer", "per MAdd (ours MAdd/s / peer MAdd/s)",
                    "target >= 1.0x"], rows)  # fmt: skip
    note = (
        f"Median of {steps} steps after a warm-up one, ours and the peer's in turn. "
        "Same batch, same threads, random data; detectors include anchor matching, hard "
        "negative mining and the loss (torchvision's SSD: its transform, matching and loss). "
        "Channels-last rows feed NHWC images to both models (weights stay NCHW), as "
        "`DetectionTask(channels_last=True)` and `SegmentationTask(channels_last=True)` do "
        "(torchvision's SSD re-batches its images in NCHW inside its transform, so its "
        "channels-last row runs as its default one); `python -m benchmarks.train_profile` "
        "splits a step into forward, loss, backward and optimizer and lists the top operators."
    )
    return text + "\n\n" + note


def _use_torch_relu6(model: nn.Module) -> None:
    """Swap every ``InPlaceReLU6`` for torch's ``nn.ReLU6(inplace=True)`` (the network as
    it was before ``InPlaceReLU6``; same numbers), for before/after timings."""
    from backbones.layers import InPlaceReLU6

    for module in model.modules():
        for name, child in module.named_children():
            if isinstance(child, InPlaceReLU6):
                setattr(module, name, nn.ReLU6(inplace=True))


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model (median)")
    parser.add_argument("--quick", action="store_true", help="tiny inputs, a smoke run")
    parser.add_argument("--torch_relu6", action="store_true",
                        help="time ours with torch's nn.ReLU6 (before InPlaceReLU6)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    pairs = latency.build_pairs(args.quick)
    for pair in pairs[:3]:
        pair.complexity = latency.complexity(pair)
        if args.torch_relu6:
            _use_torch_relu6(pair.model)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.threads} threads, load average {load:.1f} at start")
    print(training_table(pairs, args.quick, args.steps))


if __name__ == "__main__":
    main()
