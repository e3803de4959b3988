"""Figures of an evaluation and of a run's curves, as matplotlib figures and PNG files.

- ``per_class_bars``: AP or IoU per class.
- ``precision_recall``: COCOeval's precision-recall curves per class (IoU 0.5 and the
  0.5:0.95 mean).
- ``confusion_matrix``: row-normalized confusion matrix.
- ``plot_run`` / ``mobilezoo plot RUN_DIR``: every scalar a run logged to TensorBoard,
  one PNG per group (``train``, ``val``, ``lr``...), drawn from the event files.

matplotlib is imported when a figure is drawn (Agg backend: no display needed).
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def per_class_bars(names: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> Any:
    """Horizontal bars, one per class, best at the top; NaN/-1 (absent classes) skipped."""
    plt = _pyplot()
    pairs = [
        (n, float(v)) for n, v in zip(names, values, strict=True) if v >= 0 and not math.isnan(v)
    ]
    pairs.sort(key=lambda p: p[1])
    fig, ax = plt.subplots(figsize=(6, max(2.0, 0.28 * len(pairs) + 1)))
    ax.barh([p[0] for p in pairs], [p[1] for p in pairs], color="#3b7dd8")
    for i, (_, v) in enumerate(pairs):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    mean = float(np.mean([p[1] for p in pairs])) if pairs else float("nan")
    ax.set(xlim=(0, 1.1), xlabel=xlabel, title=f"{title} (mean {mean:.3f})")
    fig.tight_layout()
    return fig


def class_ap(precision: np.ndarray) -> np.ndarray:
    """AP@[.5:.95] per class from COCOeval's ``precision`` ``[T, R, K, A, M]`` (area all,
    100 detections), -1 for a class without ground truth."""
    p = precision[:, :, :, 0, -1]
    out = np.full(p.shape[2], -1.0)
    for k in range(p.shape[2]):
        valid = p[:, :, k][p[:, :, k] > -1]
        if valid.size:
            out[k] = float(valid.mean())
    return out


def precision_recall(
    precision: np.ndarray,
    recall_thresholds: np.ndarray,
    iou_thresholds: np.ndarray,
    names: Sequence[str],
    max_classes: int = 20,
) -> Any:
    """Precision-recall curves at IoU 0.5, one per class (the ``max_classes`` with most AP),
    and the mean over classes at IoU 0.5 and averaged over 0.5:0.95."""
    plt = _pyplot()
    t50 = int(np.argmin(np.abs(iou_thresholds - 0.5)))
    p = precision[:, :, :, 0, -1]  # [T, R, K]
    fig, ax = plt.subplots(figsize=(6, 5))
    ap = class_ap(precision)
    for k in np.argsort(-ap)[:max_classes]:
        if ap[k] < 0:
            continue
        ax.plot(recall_thresholds, np.clip(p[t50, :, k], 0, 1), lw=1, alpha=0.7,
                label=f"{names[k] if k < len(names) else k} ({ap[k]:.2f})")  # fmt: skip
    all_ious = p.transpose(1, 0, 2).reshape(p.shape[1], -1)  # [R, T * K]
    for curve, style, label in ((p[t50], "k-", "mean, IoU 0.5"), (all_ious, "k--", "mean, IoU 0.5:0.95")):  # fmt: skip
        ax.plot(recall_thresholds, _masked_mean(curve), style, lw=2, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title="Precision-recall at IoU 0.5 (legend: AP@[.5:.95])")  # fmt: skip
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def _masked_mean(curve: np.ndarray) -> np.ndarray:
    """Mean over the columns of ``curve`` ``[R, N]`` that are defined (> -1); NaN if none."""
    mask = curve > -1
    total = np.where(mask, curve, 0.0).sum(axis=1)
    count = mask.sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def confusion_matrix(confmat: np.ndarray, names: Sequence[str], title: str) -> Any:
    """Row-normalized confusion matrix (rows: true class, columns: predicted)."""
    plt = _pyplot()
    cm = np.asarray(confmat, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(cm)
    size = min(12.0, max(4.0, 0.4 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046)
    if n <= 40:
        labels = [str(x) for x in names][:n]
        ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(n), labels, fontsize=8)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if norm[i, j] >= 0.005:
                        colour = "white" if norm[i, j] > 0.5 else "black"
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)  # fmt: skip
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG (parents made) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# -- the curves of a finished run ---------------------------------------------------------
def read_scalars(run_dir: str | Path) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar of the TensorBoard event files of ``run_dir``: ``{tag: (steps,
    values)}``, sorted by step (later files win on a repeated step, as after a resume).

    Only the files directly in ``run_dir`` count (the ``validate/`` and ``test/`` folders
    of evaluations inside a run are runs of their own); if there are none, those below it.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pattern = "events.out.tfevents.*"
    files = sorted(Path(run_dir).glob(pattern)) or sorted(Path(run_dir).rglob(pattern))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for file in files:
        acc = EventAccumulator(str(file), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for event in acc.Scalars(tag):
                series[tag][int(event.step)] = float(event.value)
    return {tag: (sorted(v), [v[s] for s in sorted(v)]) for tag, v in sorted(series.items())}


def _group(tag: str) -> str:
    if tag.startswith(("lr", "lr-")) or "/lr" in tag:
        return "lr"
    if tag.startswith("val/iou_") or tag.startswith("test/iou_"):
        return tag.split("/")[0] + "_per_class"
    return tag.split("/")[0] if "/" in tag else "other"


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """One PNG per group of scalars (``train.png``, ``val.png``, ``lr.png``, ...) in
    ``out_dir`` (default ``<run_dir>/plots``); returns the files written."""
    plt = _pyplot()
    scalars = read_scalars(run_dir)
    groups: dict[str, list[str]] = defaultdict(list)
    for tag in scalars:
        if tag not in ("epoch", "hp_metric"):
            groups[_group(tag)].append(tag)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "plots"
    written = []
    for group, tags in sorted(groups.items()):
        cols = min(3, len(tags))
        rows = math.ceil(len(tags) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, tag in zip(axes.flat, tags, strict=False):
            steps, values = scalars[tag]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3)
            ax.set(title=tag, xlabel="step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(tags) :]:
            ax.axis("off")
        fig.tight_layout()
        written.append(save_figure(fig, out / f"curves_{group}.png"))
    return written


def plot_main(argv: Sequence[str]) -> None:
    """``mobilezoo plot RUN_DIR [--output_dir DIR]``."""
    parser = argparse.ArgumentParser(
        prog="mobilezoo plot",
        description="Draw the curves (losses, learning rate, every metric) of a run from "
        "its TensorBoard logs as PNG files.",
    )
    parser.add_argument(
        "run_dir", help="a run folder, e.g. outputs/detection_demo/lightning_logs/version_0"
    )
    parser.add_argument(
        "--output_dir", default=None, help="where the PNGs go (default: RUN_DIR/plots)"
    )
    args = parser.parse_args(list(argv))
    try:
        files = plot_run(args.run_dir, args.output_dir)
    except FileNotFoundError as err:
        parser.exit(2, f"mobilezoo plot: error: {err}\n")
    for f in files:
        print(f)
