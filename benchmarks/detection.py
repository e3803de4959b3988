"""SSDLite-MobileNetV2 against torchvision's ssdlite320_mobilenet_v3_large, and the demo run.

    python benchmarks/detection.py              # latency + training throughput table
    python benchmarks/detection.py --demo       # train the demo config, print COCO metrics

Both models are measured in the same process, interleaved, so the ratio is meaningful on a
shared machine even when absolute times drift. Nothing is downloaded (random weights).
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision.models.detection import ssdlite320_mobilenet_v3_large

from backbones import count_madds, count_parameters
from benchmarks.timing import median_ms
from heads.ssdlite import ssdlite_mobilenet_v2

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "detection_demo_ssdlite_mobilenetv2.yaml"
STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def _random_targets(batch: int, size: int, num_classes: int, one_based: bool) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.3 + 16
        labels = torch.randint(0, num_classes, (3,), generator=g) + int(one_based)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": labels})
    return targets


def compare(size: int, train_batch: int, repeats: int) -> None:
    torch.manual_seed(0)
    ours = ssdlite_mobilenet_v2(num_classes=80, image_size=size)
    theirs = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    x = torch.rand(1, 3, size, size) * 2 - 1

    rows = []
    for name, model in (
        ("ours: SSDLite-MobileNetV2", ours),
        ("torchvision: SSDLite-MNv3-L", theirs),
    ):
        params = count_parameters(model)
        madds = count_madds(model, [x[0]] if model is theirs else x)
        rows.append([name, f"{params / 1e6:.2f}M", f"{madds / 1e9:.3f}G"])

    ours.eval()
    theirs.eval()
    with torch.inference_mode():
        for _ in range(3):  # warm-up
            ours(x)
            theirs([x[0]])
        lat_ours, lat_theirs = [], []
        for _ in range(repeats):  # interleaved
            lat_ours.append(median_ms(lambda: ours(x), warmup=0, repeats=1))
            lat_theirs.append(median_ms(lambda: theirs([x[0]]), warmup=0, repeats=1))
    latency = (statistics.median(lat_ours), statistics.median(lat_theirs))

    images = torch.rand(train_batch, 3, size, size) * 2 - 1
    t_ours = _random_targets(train_batch, size, 80, one_based=False)
    t_theirs = _random_targets(train_batch, size, 90, one_based=True)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=1e-3, momentum=0.9)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=1e-3, momentum=0.9)

    def step_ours() -> None:
        loss = ours.compute_loss(ours(images), t_ours)["loss"]
        opt_ours.zero_grad()
        loss.backward()
        opt_ours.step()

    def step_theirs() -> None:
        loss = sum(theirs(list(images), t_theirs).values())
        opt_theirs.zero_grad()
        loss.backward()
        opt_theirs.step()

    ours.train()
    theirs.train()
    step_ours()
    step_theirs()
    steps_ours, steps_theirs = [], []
    for _ in range(max(2, repeats // 10)):
        steps_ours.append(median_ms(step_ours, warmup=0, repeats=1))
        steps_theirs.append(median_ms(step_theirs, warmup=0, repeats=1))
    throughput = (
        train_batch / statistics.median(steps_ours) * 1000,
        train_batch / statistics.median(steps_theirs) * 1000,
    )

    print(f"\nCPU, {torch.get_num_threads()} threads, fp32, input {size}x{size}")
    header = ["model", "params", "MAdds", "latency b1 (ms)", f"train img/s (b{train_batch})"]
    rows[0] += [f"{latency[0]:.1f}", f"{throughput[0]:.1f}"]
    rows[1] += [f"{latency[1]:.1f}", f"{throughput[1]:.1f}"]
    rows.append(
        ["ratio ours / torchvision", "", "", f"{latency[0] / latency[1]:.2f}x",
         f"{throughput[0] / throughput[1]:.2f}x"]
    )  # fmt: skip
    _print_table(header, rows)


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def demo(extra: list[str]) -> None:
    """Run ``mobilezoo fit`` on the demo config exactly as the README does; report time and
    the COCO metrics of the last validation."""
    out = Path(tempfile.mkdtemp(prefix="detection_demo_"))
    cmd = [
        sys.executable, "-m", "tasks.cli", "fit", "-c", str(DEMO_CONFIG),
        f"--trainer.default_root_dir={out}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={out}",
        *extra,
    ]  # fmt: skip
    print("running:", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ.copy())
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = list(csv.DictReader(next(out.rglob("metrics.csv")).open()))
    val = [r for r in rows if r.get("val/map")]
    if not val:
        raise SystemExit("no validation result in the run's metrics.csv")
    last = val[-1]
    print(f"\nDetection demo ({DEMO_CONFIG.name}), epoch {last['epoch']}, step {last['step']}")
    _print_table(
        ["wall time", "CPU time (user+sys)", *STATS],
        [[f"{wall / 60:.1f} min", f"{(usage.ru_utime + usage.ru_stime) / 60:.1f} min",
          *(f"{float(last['val/' + s]):.3f}" for s in STATS)]],
    )  # fmt: skip
    curve = [(r["epoch"], float(r["val/map_50"])) for r in val]
    print("AP50 per validation:", ", ".join(f"epoch {e}: {v:.3f}" for e, v in curve))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="train the demo config instead")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=30)
    args, extra = parser.parse_known_args()
    if args.demo:
        demo(extra)
    else:
        compare(args.size, args.train_batch, args.repeats)


if __name__ == "__main__":
    main()
