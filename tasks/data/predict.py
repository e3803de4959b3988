"""Unlabelled images for ``mobilezoo predict``: every image file in a folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.data.io import read_image
from tasks.data.transforms import to_chw_tensor

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class PredictImageDataset(Dataset):
    """Images of a folder (recursively), sorted by path.

    Returns dicts with ``image`` ``[3, H, W]`` float32 (after ``transform``), ``path``
    (str) and ``orig_size`` (``[2]`` int64: height, width before the transform).
    """

    def __init__(self, folder: str | os.PathLike, transform: A.BasicTransform) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"predict folder not found: {self.folder}")
        self.paths = sorted(
            p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.paths:
            raise FileNotFoundError(
                f"no images with extensions {IMAGE_EXTENSIONS} in {self.folder}"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = read_image(self.paths[index])
        out = self.transform(image=image)["image"]
        return {
            "image": to_chw_tensor(np.asarray(out, dtype=np.float32)),
            "path": str(self.paths[index]),
            "orig_size": torch.tensor(image.shape[:2], dtype=torch.int64),
        }


def collate_predict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (they must share a size) and keep paths as a list."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "path": [s["path"] for s in samples],
        "orig_size": torch.stack([s["orig_size"] for s in samples]),
    }
