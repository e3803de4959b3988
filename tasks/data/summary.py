"""One line per run saying what the data module loaded: images per split, boxes (with
the dropped and clipped ones) for detection, and where a generated demo set lives."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

#: attribute names of the data modules' data sets, in the order they are reported
_SPLIT_ATTRIBUTES = {"train_set": "train", "val_set": "val", "test_set": "test"}


def _datasets(datamodule: Any) -> dict[str, Dataset]:
    found: dict[str, Dataset] = {}
    named = getattr(datamodule, "_datasets", None)  # COCODataModule: {"train", "validate", "test"}
    if isinstance(named, dict):
        for key, ds in named.items():
            found[{"validate": "val"}.get(key, key)] = ds
    for attribute, split in _SPLIT_ATTRIBUTES.items():
        ds = getattr(datamodule, attribute, None)
        if isinstance(ds, Dataset) and split not in found:
            found[split] = ds
    return found


def _describe(split: str, dataset: Dataset) -> str:
    try:
        text = f"{split} {len(dataset)} images"  # type: ignore[arg-type]
    except TypeError:
        return split
    annotations = getattr(dataset, "annotations", None)
    ids = getattr(dataset, "image_ids", None)
    boxes = getattr(annotations, "boxes", None)
    if isinstance(boxes, dict) and ids is not None:
        text += f", {sum(len(boxes[i]) for i in ids)} boxes"
        dropped = getattr(annotations, "num_dropped", 0)
        clipped = getattr(annotations, "num_clipped", 0)
        if dropped or clipped:
            text += f" ({dropped} dropped, {clipped} clipped)"
    return text


def describe_data(datamodule: Any) -> str:
    """``"DemoDetectionDataModule: train 3000 images, 6000 boxes; val 100 images, ...;
    generated demo set in /root/.cache/mobilezoo/demo_detection_1a2b"``."""
    parts = [_describe(split, ds) for split, ds in _datasets(datamodule).items()]
    line = f"{type(datamodule).__name__}: " + ("; ".join(parts) or "no data set up")
    root = getattr(datamodule, "root", None)
    if root is not None:
        kind = "generated demo set in" if hasattr(datamodule, "spec") else "from"
        line += f"; {kind} {root}"
    return line


class DataSummary(Callback):
    """Print ``describe_data`` once when ``fit``, ``validate`` or ``test`` starts."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage in ("fit", "validate", "test") and trainer.datamodule is not None:
            rank_zero_info(describe_data(trainer.datamodule))
