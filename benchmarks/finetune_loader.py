"""Training-loader speed on real photos: images/s of one worker (the main process, no
worker processes) with the SSD augmentation, the project's loader against
``torchvision.transforms.v2`` doing the same augmentation.

Same augmentation on both sides: photometric distortion (p 0.5), zoom-out onto a canvas
filled with the SSD mean (p 0.5, up to the config's ``zoom_out_ratio``), SSD's min-IoU
crop, horizontal flip, resize to the square input size, normalize to [-1, 1]. torchvision
decodes every JPEG in full with Pillow, as its reference scripts do; the project's loader
decodes at reduced size where the crop allows it (``reduced_decoding``; also measured off).
Both are run interleaved, repeated, the median per image taken.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from benchmarks.finetune_torchvision import TorchvisionCOCO
from tasks.data.coco import COCOAnnotations, COCODetectionDataset
from tasks.data.ssd_transforms import SSD_FILL, decode_min_side, ssd_train_transforms
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD

ZOOM_OUT_RATIO = 2.0  # configs/detection_finetune_ssdlite_mobilenetv2.yaml


def torchvision_ssd_transform(image_size: int) -> v2.Compose:
    """The project's ``ssd`` augmentation written with ``transforms.v2``."""
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=list(SSD_FILL), side_range=(1.0, ZOOM_OUT_RATIO), p=0.5),
        v2.RandomIoUCrop(), v2.RandomHorizontalFlip(p=0.5), v2.ToImage(),
        v2.Resize((image_size, image_size)), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(SYMMETRIC_MEAN), list(SYMMETRIC_STD)), v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip


def _per_image_s(dataset: Dataset, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return (time.perf_counter() - start) / count


def loader_table(roots: list[Path], image_size: int, count: int, repeats: int = 3) -> list[str]:
    """Markdown rows: images/s per worker of each loader, and the ratio to torchvision."""
    lines = [
        f"Training loader, one worker, SSD augmentation at {image_size}x{image_size}; median "
        f"of {repeats} passes over {count} images; images/s (higher is better)",
        "| set | torchvision v2 (full decode) | mobilezoo, full decode | mobilezoo, reduced "
        "decode | ratio to torchvision |",
        "|---|---|---|---|---|",
    ]
    torch.manual_seed(0)
    for root in roots:
        ann = COCOAnnotations(root / "annotations" / "instances_train.json")
        transform = ssd_train_transforms(
            image_size, SYMMETRIC_MEAN, SYMMETRIC_STD, "ssd", ZOOM_OUT_RATIO
        )
        loaders = {
            "torchvision": TorchvisionCOCO(root / "train", ann, torchvision_ssd_transform(image_size)),
            "full": COCODetectionDataset(root / "train", ann, transform),
            "reduced": COCODetectionDataset(
                root / "train", ann, transform, min_side=decode_min_side(image_size, "ssd")
            ),
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(repeats):
            for name, dataset in loaders.items():
                times[name].append(_per_image_s(dataset, count))
        rate = {name: 1 / statistics.median(t) for name, t in times.items()}
        lines.append(
            f"| {root.name} | {rate['torchvision']:.1f} | {rate['full']:.1f} | "
            f"{rate['reduced']:.1f} | {rate['reduced'] / rate['torchvision']:.2f}x |"
        )
        print(lines[-1], flush=True)
    return lines
