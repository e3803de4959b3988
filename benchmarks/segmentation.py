"""Mobile DeepLabv3 benchmarks: CPU latency and training throughput against torchvision's
mobile segmenters, and the demo config's mIoU.

    python benchmarks/segmentation.py              # latency + throughput table
    python benchmarks/segmentation.py --demo       # train the demo config, report mIoU

Absolute times on shared machines vary by 1.5x between runs; compare the ratios, which are
measured in one run against a peer (torchvision ``deeplabv3_mobilenet_v3_large``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backbones.complexity import count_madds, count_parameters  # noqa: E402
from benchmarks.timing import interleaved_medians  # noqa: E402
from heads.deeplabv3 import deeplabv3_mobilenet_v2  # noqa: E402


class _OutOnly(nn.Module):
    """torchvision's segmenters return ``{"out": logits}``; keep the logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def models(num_classes: int) -> dict[str, nn.Module]:
    from torchvision.models import segmentation as tvseg

    return {
        "ours DeepLabv3 MNetV2 OS16": deeplabv3_mobilenet_v2(num_classes),
        "ours DeepLabv3 MNetV2 OS16 ASPP": deeplabv3_mobilenet_v2(num_classes, aspp=True),
        "tv deeplabv3_mobilenet_v3_large": _OutOnly(
            tvseg.deeplabv3_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
            )
        ),
        "tv lraspp_mobilenet_v3_large": _OutOnly(
            tvseg.lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=None, num_classes=num_classes
            )
        ),
    }


def speed(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    nets = models(21)
    x = torch.randn(1, 3, args.size, args.size)
    xt = torch.randn(args.train_batch, 3, args.train_size, args.train_size)
    yt = torch.randint(0, 21, (args.train_batch, args.train_size, args.train_size))
    optimizers = {
        n: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for n, m in nets.items()
    }

    def infer(model: nn.Module):
        def run() -> None:
            with torch.inference_mode():
                model.eval()(x)

        return run

    def train(name: str):
        def run() -> None:
            model = nets[name].train()
            loss = nn.functional.cross_entropy(model(xt), yt, ignore_index=255)
            optimizers[name].zero_grad()
            loss.backward()
            optimizers[name].step()

        return run

    for name, model in nets.items():  # warm-up: allocator, kernels
        infer(model)()
        train(name)()
    latency = interleaved_medians({n: infer(m) for n, m in nets.items()}, 0, args.runs)
    steps = interleaved_medians({n: train(n) for n in nets}, 0, args.train_steps)
    ref = "tv deeplabv3_mobilenet_v3_large"
    print(
        f"\nCPU, {args.threads} threads, fp32, eager. Latency: batch 1 at {args.size}x"
        f"{args.size}, median of {args.runs}. Training: batch {args.train_batch} at "
        f"{args.train_size}x{args.train_size}, SGD step, median of {args.train_steps}. "
        "Models run round-robin.\nRatios are against torchvision "
        "deeplabv3_mobilenet_v3_large in this run.\n"
    )
    print(
        "| model | params | MAdds | latency ms | x tv-DLv3 | train img/s | x tv-DLv3 |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name, model in nets.items():
        params = count_parameters(model)
        madds = count_madds(model, x)
        ips, ref_ips = (1000 * args.train_batch / steps[n] for n in (name, ref))  # ms
        print(
            f"| {name} | {params / 1e6:.2f}M | {madds / 1e9:.2f}G | {latency[name]:.1f} | "
            f"{latency[name] / latency[ref]:.2f} | {ips:.2f} | {ips / ref_ips:.2f} |"
        )


def demo(args: argparse.Namespace) -> None:
    """Train the demo config through the real CLI and report validation mIoU."""
    from lightning.pytorch import LightningDataModule

    from tasks.base import BaseTask
    from tasks.cli.command import MobileZooCLI

    config = REPO / "configs" / "segmentation_demo_deeplabv3_mobilenetv2.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MOBILEZOO_CACHE", str(Path(tmp) / "cache"))
        start = time.perf_counter()
        cli = MobileZooCLI(
            BaseTask,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=[
                "fit", "-c", str(config),
                "--trainer.default_root_dir", str(Path(tmp) / "run"),
                "--trainer.enable_progress_bar", "false",
                *args.extra,
            ],
        )  # fmt: skip
        seconds = time.perf_counter() - start
        metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    print(f"\nDemo config: {config.name}, {cli.trainer.current_epoch} epochs, "
          f"{cli.trainer.global_step} steps, {seconds / 60:.1f} min on CPU "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    print("| metric | value |\n|---|---|")
    for key in sorted(k for k in metrics if k.startswith("val/")):
        print(f"| {key} | {metrics[key]:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="train the demo config instead")
    parser.add_argument("--size", type=int, default=513, help="latency input side")
    parser.add_argument("--runs", type=int, default=10, help="timed latency runs")
    parser.add_argument("--train-size", type=int, default=321, help="training crop side")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    # Anything else is passed to the CLI in --demo, e.g. --trainer.max_epochs=4.
    args, args.extra = parser.parse_known_args()
    demo(args) if args.demo else speed(args)


if __name__ == "__main__":
    main()
