"""Fine-tuning on real photos: the project's recipe against torchvision's training code.

    python -m benchmarks.finetune                         # raccoon + balloon, 3 seeds
    python -m benchmarks.finetune --seeds 1 --steps 100   # shorter
    python -m benchmarks.finetune --root data/mine        # any COCO-format folder
    python -m benchmarks.finetune --parts loader          # one part only

Parts (``--parts``, all by default):

- ``detection``: per set, (a) ``mobilezoo fit`` with
  ``configs/detection_finetune_ssdlite_mobilenetv2.yaml`` (only ``root`` and
  ``num_classes`` set, plus ``--steps`` / ``--image-size`` when given) and (b) torchvision's
  SSD training code (``benchmarks.finetune_torchvision``) on the same features from the
  same weights, same image size, steps, batch and data; AP, AP50 (pycocotools, val split),
  wall time and training images/s, mean and spread over ``--seeds``.
- ``segmentation``: DeepLab (``configs/segmentation_finetune_deeplabv3_mobilenetv2.yaml``,
  ``--seg-steps``) and the joint model
  (``configs/multitask_finetune_ssdlite_deeplabv3_mobilenetv2.yaml``, its own steps or
  ``--steps``) fine-tuned on the polygon set through the CLI: mIoU and the object's IoU
  (and the joint model's box AP).
- ``loader``: training images/s of one loader worker with the SSD augmentation: the
  project's loader (reduced JPEG decoding on and off) against ``torchvision.transforms.v2``
  doing the same augmentation on full decodes.

Real data: ``../shared/real-data`` (raccoon, balloon; see its README). Detection weights:
the config's ``weights_backbone`` (``voc_tf_8bit``: the backbone of TF's Mobile DeepLabv3
trained on COCO and PASCAL VOC) for both training codes, or ``--weights-backbone`` (e.g.
``imagenet_tf_8bit``, TF-slim's 8-bit ImageNet MobileNetV2, or a torchvision-style backbone
state-dict file). In the segmentation part, DeepLab's "from ImageNet" row uses
``imagenet_tf_8bit`` and the joint model its config's ``weights_backbone``, each unless
``--weights-backbone`` is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real-data"
DET_CONFIG = ROOT / "configs" / "detection_finetune_ssdlite_mobilenetv2.yaml"
SEG_CONFIG = ROOT / "configs" / "segmentation_finetune_deeplabv3_mobilenetv2.yaml"
JOINT_CONFIG = ROOT / "configs" / "multitask_finetune_ssdlite_deeplabv3_mobilenetv2.yaml"
IMAGENET = "imagenet_tf_8bit"


def _num_classes(root: Path) -> int:
    data = json.loads((root / "annotations" / "instances_val.json").read_text())
    return len(data["categories"])


def _cli_fit(config: Path, overrides: list[str], env_threads: int) -> tuple[dict, float]:
    """``mobilezoo fit`` in a subprocess; the last validation row of its metrics.csv."""
    out = Path(tempfile.mkdtemp(prefix="finetune_"))
    cmd = [
        sys.executable, "-m", "tasks.cli", "fit", "-c", str(config),
        f"--trainer.default_root_dir={out}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={out}", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=null", "--trainer.enable_checkpointing=false", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(env_threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    rows = list(csv.DictReader(next(out.rglob("metrics.csv")).open()))
    val = [r for r in rows if any(k.startswith("val/") and v for k, v in r.items())]
    if not val:
        raise SystemExit(f"no validation result in {out}")
    return {k: float(v) for k, v in val[-1].items() if v and k.startswith("val/")}, wall


def _weights_overrides(weights: str, prefix: str = "--model.init_args.") -> list[str]:
    return [f"{prefix}weights=null", f"{prefix}weights_backbone={weights}", f"{prefix}padding=tf"]


def _steps_overrides(steps: int) -> list[str]:
    """Train ``steps`` steps, validate once at the end."""
    return [f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1",
            "--trainer.check_val_every_n_epoch=null", f"--trainer.val_check_interval={steps}"]  # fmt: skip


def run_ours(root: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    overrides = [
        f"--data.init_args.root={root}", f"--model.init_args.num_classes={_num_classes(root)}",
        f"--seed_everything={seed}", f"--data.init_args.loader.num_workers={args.workers}",
    ]  # fmt: skip
    if args.weights_backbone:
        overrides += _weights_overrides(args.weights_backbone)
    if args.steps:
        overrides += _steps_overrides(args.steps)
    if args.image_size:
        overrides += [f"--model.init_args.image_size={args.image_size}",
                      f"--data.init_args.image_size={args.image_size}"]  # fmt: skip
    metrics, wall = _cli_fit(DET_CONFIG, overrides, args.threads)
    steps = args.steps or _config_value(DET_CONFIG, "max_steps")
    batch = _config_value(DET_CONFIG, "batch_size")
    return {"map": metrics["val/map"], "map_50": metrics["val/map_50"], "wall_s": wall,
            "images_per_s": steps * batch / wall}  # fmt: skip


def _config_value(config: Path, key: str) -> int:
    return int(_config_entry(config, key))  # type: ignore[arg-type]


def _config_entry(config: Path, key: str) -> object:
    """The first value of ``key`` anywhere in a YAML config."""
    import yaml

    def find(node: object) -> object:
        if isinstance(node, dict):
            if key in node:
                return node[key]
            for value in node.values():
                if (found := find(value)) is not None:
                    return found
        return None

    return find(yaml.safe_load(config.read_text()))


def _start_weights(args: argparse.Namespace, config: Path) -> str:
    """The backbone weights a run of ``config`` starts from: ``--weights-backbone``, else the
    config's own (both detection training codes use ``DET_CONFIG``'s)."""
    return str(args.weights_backbone or _config_entry(config, "weights_backbone"))


def run_torchvision(root: Path, args: argparse.Namespace, seed: int) -> dict[str, float]:
    import torch

    from benchmarks.finetune_torchvision import finetune_torchvision

    torch.set_num_threads(args.threads)
    weights = _start_weights(args, DET_CONFIG)
    weights = None if weights == "null" else weights
    return finetune_torchvision(
        root, args.steps or _config_value(DET_CONFIG, "max_steps"),
        args.image_size or _config_value(DET_CONFIG, "image_size"),
        _config_value(DET_CONFIG, "batch_size"), weights, seed, args.workers,
    )  # fmt: skip


def _mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def detection(roots: list[Path], args: argparse.Namespace) -> list[str]:
    weights = _start_weights(args, DET_CONFIG)
    lines = [
        f"Detection fine-tune from weights_backbone {weights}, {len(args.seeds)} seed(s) "
        f"{args.seeds}; mean ± std over seeds",
        "| set | training code | AP | AP50 | wall time (s) | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for root in roots:
        for name, fn in (("mobilezoo recipe", run_ours), ("torchvision SSD", run_torchvision)):
            runs = []
            for seed in args.seeds:
                runs.append(fn(root, args, seed))
                print(f"{root.name} {name} seed {seed}: {runs[-1]}", flush=True)
            cols = [_mean_spread([r[k] for r in runs]) for k in ("map", "map_50")]
            cols += [
                f"{statistics.mean([r[k] for r in runs]):.1f}" for k in ("wall_s", "images_per_s")
            ]
            lines.append(f"| {root.name} | {name} | {' | '.join(cols)} |")
    return lines


Run = tuple[Path, list[str], list[int]]  # config, CLI overrides, seeds


def segmentation_runs(root: Path, args: argparse.Namespace) -> dict[str, Run]:
    """The segmentation part's fits by label: DeepLab's recipe (from ``voc_tf_8bit``) over
    the seeds; DeepLab from ImageNet and the joint model (from its config's weights) on the
    first seed."""
    classes = _num_classes(root)
    imagenet = args.weights_backbone or IMAGENET
    joint_weights = _start_weights(args, JOINT_CONFIG)
    common = [
        f"--data.init_args.root={root}",
        f"--data.init_args.loader.num_workers={args.workers}",
    ]
    seg = [f"--model.init_args.num_classes={classes + 1}", *common]
    if args.seg_steps:  # else the config's steps and validation cadence
        seg += [*_steps_overrides(args.seg_steps),
                f"--model.init_args.lr_scheduler.init_args.warmup_steps={max(1, args.seg_steps // 10)}"]  # fmt: skip
    return {
        "DeepLab from voc_tf_8bit": (SEG_CONFIG, seg, args.seeds),
        "DeepLab from ImageNet": (
            SEG_CONFIG, [*seg, *_weights_overrides(imagenet)], args.seeds[:1]
        ),
        # the joint recipe's own steps and weights, or --steps / --weights-backbone
        f"joint SSDLite+DeepLab from {joint_weights}": (JOINT_CONFIG, [
            *common, *(_steps_overrides(args.steps) if args.steps else []),
            f"--model.init_args.num_det_classes={classes}",
            f"--model.init_args.num_seg_classes={classes + 1}",
            f"--model.init_args.weights_backbone={joint_weights}",
        ], args.seeds[:1]),
    }  # fmt: skip


def segmentation(root: Path, args: argparse.Namespace) -> list[str]:
    """Runs ``segmentation_runs``; a table of mIoU, the object's IoU and box AP50."""
    name = _class_key(root)
    steps = args.seg_steps or _config_value(SEG_CONFIG, "max_steps")
    joint_steps = args.steps or _config_value(JOINT_CONFIG, "max_steps")
    lines = [
        f"Segmentation fine-tune on {root.name} through the CLI (DeepLab {steps} steps, the "
        f"joint model {joint_steps}); mean ± std over the seeds run",
        f"| model | seeds | mIoU | {name} IoU | box AP50 | wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for label, (config, overrides, seeds) in segmentation_runs(root, args).items():
        results = []
        for seed in seeds:
            metrics, wall = _cli_fit(
                config, [*overrides, f"--seed_everything={seed}"], args.threads
            )
            print(f"{label} seed {seed}: {metrics}", flush=True)
            results.append({**metrics, "wall": wall})
        box = (
            _mean_spread([r["val/map_50"] for r in results])
            if "val/map_50" in results[0] else "-"
        )  # fmt: skip
        iou = _mean_spread([r.get(f"val/iou_{name}", float("nan")) for r in results])
        lines.append(
            f"| {label} | {', '.join(map(str, seeds))} | "
            f"{_mean_spread([r['val/miou'] for r in results])} | {iou} | {box} | "
            f"{statistics.mean(r['wall'] for r in results):.0f} |"
        )
    return lines


def _class_key(root: Path) -> str:
    data = json.loads((root / "annotations" / "instances_val.json").read_text())
    return str(data["categories"][0]["name"]).replace(" ", "_")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, action="append", help="COCO-format folder(s)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--steps", type=int, default=0, help="override the config's steps")
    parser.add_argument(
        "--seg-steps", type=int, default=0, help="override the segmentation config's steps"
    )
    parser.add_argument("--image-size", type=int, default=0)
    parser.add_argument(
        "--weights-backbone", default="", help="backbone weights of both training codes"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--workers", type=int, default=2, help="loader workers per run")
    parser.add_argument("--loader-images", type=int, default=60)
    parser.add_argument("--parts", default="detection,segmentation,loader")
    args = parser.parse_args()
    args.seeds = list(range(args.seeds))
    roots = args.root or [REAL / "raccoon", REAL / "balloon"]
    parts = args.parts.split(",")
    out: list[str] = []
    if "loader" in parts:
        from benchmarks.finetune_loader import loader_table

        out += [*loader_table(roots, args.image_size or 300, args.loader_images), ""]
        print("\n".join(out), flush=True)
    if "detection" in parts:
        out += [*detection(roots, args), ""]
    if "segmentation" in parts:
        polygons = [r for r in roots if _has_polygons(r)]
        for root in polygons:
            out += [*segmentation(root, args), ""]
    print("\n" + "\n".join(out))


def _has_polygons(root: Path) -> bool:
    data = json.loads((root / "annotations" / "instances_val.json").read_text())
    return any(a.get("segmentation") for a in data["annotations"])


if __name__ == "__main__":
    main()
