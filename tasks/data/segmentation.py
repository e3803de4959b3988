"""The segmentation data set and the base of the segmentation data modules.

- ``SegmentationDataset``: (image file, label PNG) pairs with an optional label lookup
  table (Cityscapes label ids -> train ids), errors that name the file.
- ``collate_segmentation``: pads images of different sizes for full-image evaluation and
  keeps each image's true size so the task can evaluate it unpadded.
- ``SegmentationDataModule``: the base of the VOC, Cityscapes, COCO-mask and demo data
  modules (DeepLab augmentation from ``tasks.data.seg_transforms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.data.base import BaseDataModule, LoaderOptions
from tasks.data.io import BadSampleError, read_image, read_label_png
from tasks.data.predict import PredictImageDataset
from tasks.data.seg_transforms import IGNORE_INDEX, segmentation_transforms
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD, to_chw_tensor

import albumentations as A  # isort: skip  (after tasks.data.transforms: no update check)


class SegmentationDataset(Dataset):
    """(image, mask) file pairs.

    Args:
        samples: ``(image_path, mask_path)`` pairs.
        transform: albumentations pipeline applied to ``image`` and ``mask`` together.
        label_map: optional ``uint8`` lookup table of 256 entries applied to the raw mask
            values (e.g. Cityscapes label ids -> train ids; unmapped values -> 255).
        num_classes: classes of the data set; mask values that are neither a class nor
            ``ignore_index`` (after ``label_map``) raise ``BadSampleError``.
        ignore_index: the void label.
        valid_values: optional ``bool [256]`` table of the raw mask values the data set
            may hold (before ``label_map``); any other value raises ``BadSampleError``
            naming the file (e.g. Cityscapes: label ids 0..33 and 255, so a corrupt mask is
            not silently mapped to void).

    Returns dicts with ``image`` ``[3, H, W]`` float32, ``mask`` ``[H, W]`` int64 and
    ``path`` (the image file).
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Path]],
        transform: A.BasicTransform | None,
        num_classes: int,
        label_map: np.ndarray | None = None,
        ignore_index: int = IGNORE_INDEX,
        valid_values: np.ndarray | None = None,
    ) -> None:
        if label_map is not None and (label_map.shape != (256,) or label_map.dtype != np.uint8):
            raise ValueError(f"label_map must be uint8 of shape (256,), got {label_map.shape}")
        if valid_values is not None and (
            valid_values.shape != (256,) or valid_values.dtype != np.bool_
        ):
            raise ValueError(f"valid_values must be bool of shape (256,), got {valid_values.shape}")
        self.valid_values = valid_values
        self.samples = list(samples)
        self.transform = transform
        self.num_classes = num_classes
        self.label_map = label_map
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``uint8 [H, W, 3]`` and mask ``uint8 [H, W]`` (mapped, validated)."""
        image_path, mask_path = self.samples[index]
        image = read_image(image_path)
        mask = read_label_png(mask_path)
        if mask.shape != image.shape[:2]:
            raise BadSampleError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{image_path} is {image.shape[1]}x{image.shape[0]}"
            )
        if self.valid_values is not None:
            bad = ~self.valid_values[mask]
            if bad.any():
                values = sorted({int(v) for v in np.unique(mask[bad])})[:10]
                allowed = np.flatnonzero(self.valid_values).tolist()
                raise BadSampleError(
                    f"{mask_path}: raw label values {values} are not label ids of this data "
                    f"set ({_ranges(allowed)})"
                )
        if self.label_map is not None:
            mask = self.label_map[mask]
        bad = (mask >= self.num_classes) & (mask != self.ignore_index)
        if bad.any():
            values = sorted({int(v) for v in np.unique(mask[bad])})[:10]
            raise BadSampleError(
                f"{mask_path}: label values {values} are neither a class "
                f"(0..{self.num_classes - 1}) nor the ignore label {self.ignore_index}"
            )
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        sample = {
            "image": to_chw_tensor(np.asarray(image, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
            "path": str(self.samples[index][0]),
        }
        if sample["image"].shape[-2:] != sample["mask"].shape:
            # An image-only resize (``base_size`` evaluation): the mask keeps the photo's
            # size, and predictions are scored there.
            sample["orig_size"] = torch.tensor(sample["mask"].shape, dtype=torch.int64)
        return sample


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 255]`` -> ``"0..2, 5, 255"``."""
    parts: list[str] = []
    start = prev = None
    for v in [*values, None]:
        if v is not None and prev is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}..{prev}")
        start = prev = v
    return ", ".join(parts)


def collate_segmentation(
    samples: list[dict[str, Any]], ignore_index: int = IGNORE_INDEX
) -> dict[str, Any]:
    """Batch samples of possibly different sizes.

    Images are padded at the bottom and right with 0 (the mean colour) and masks with
    ``ignore_index`` to the largest size in the batch.

    Returns:
        ``image`` ``[B, 3, H, W]``, ``mask`` ``[B, H, W]`` (when the samples have masks),
        ``size`` ``[B, 2]`` (each image's own height and width) and ``path`` (list of str).
    """
    sizes = torch.tensor([list(s["image"].shape[-2:]) for s in samples], dtype=torch.int64)
    height, width = (int(v) for v in sizes.max(dim=0).values)
    images = samples[0]["image"].new_zeros(len(samples), 3, height, width)
    for i, s in enumerate(samples):
        images[i, :, : s["image"].shape[-2], : s["image"].shape[-1]] = s["image"]
    batch: dict[str, Any] = {
        "image": images,
        "size": sizes,
        "path": [s["path"] for s in samples],
    }
    if "mask" in samples[0]:
        mask_sizes = [s["mask"].shape[-2:] for s in samples]
        height = max(height, *(h for h, _ in mask_sizes))
        width = max(width, *(w for _, w in mask_sizes))
        masks = torch.full((len(samples), height, width), ignore_index, dtype=torch.int64)
        for i, s in enumerate(samples):
            masks[i, : s["mask"].shape[-2], : s["mask"].shape[-1]] = s["mask"]
        batch["mask"] = masks
    if any("orig_size" in s for s in samples):
        batch["orig_size"] = torch.stack(
            [s.get("orig_size", sizes[i]) for i, s in enumerate(samples)]
        )
    return batch


class SegmentationDataModule(BaseDataModule):
    """What the segmentation data modules share: transforms, loaders and ``predict``.

    Subclasses implement ``samples(split)`` (the ``(image, mask)`` file pairs of a split)
    and set ``class_names``; they may set ``label_map``, ``valid_mask_values`` (raw mask
    values allowed before ``label_map``, see ``SegmentationDataset``) and ``palette``.
    Evaluation batches of differently sized images are padded (``collate_segmentation``)
    and each image is still evaluated at its own size.

    Args:
        crop_size: training crop side (513 for VOC, 769 for Cityscapes), or
            ``(height, width)``.
        min_scale, max_scale: random scale range of training images (DeepLab: 0.5 to 2.0).
        flip: random left-right flip in training.
        mean, std: normalization (default maps to [-1, 1], as DeepLab).
        base_size: bring every photo to this longer side before the random scale (training)
            and before inference (evaluation, predict; scored and written at the photo's own
            size). ``None`` (default) keeps each photo's size, as the VOC and Cityscapes
            protocols do; set it for photos of mixed or large sizes (a phone's 4,000 px).
        predict_dir: folder of images for ``predict`` (any layout; searched recursively).
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
    """

    class_names: tuple[str, ...] = ()
    label_map: np.ndarray | None = None
    valid_mask_values: np.ndarray | None = None
    palette: list[int] | None = None
    train_split: str = "train"
    val_split: str = "val"

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 513,
        min_scale: float = 0.5,
        max_scale: float = 2.0,
        flip: bool = True,
        mean: tuple[float, float, float] = SYMMETRIC_MEAN,
        std: tuple[float, float, float] = SYMMETRIC_STD,
        base_size: int | None = None,
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(batch_size=16),
    ) -> None:
        super().__init__(loader)
        # Built once here so a bad value fails when the config is read, not in training.
        self.train_transform = segmentation_transforms(
            True, mean, std, crop_size, min_scale, max_scale, flip, base_size=base_size
        )
        self.eval_transform = segmentation_transforms(False, mean, std, base_size=base_size)
        self.mean, self.std = tuple(mean), tuple(std)  # for drawing validation images
        self.predict_dir = predict_dir

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def samples(self, split: str) -> list[tuple[Path, Path]]:
        """``(image_path, mask_path)`` pairs of ``split``."""
        raise NotImplementedError

    def _dataset(self, split: str, train: bool) -> SegmentationDataset:
        return SegmentationDataset(
            self.samples(split),
            self.train_transform if train else self.eval_transform,
            self.num_classes,
            self.label_map,
            valid_values=self.valid_mask_values,
        )

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_set = self._dataset(self.train_split, train=True)
        if stage in ("fit", "validate", "test"):
            self.val_set = self._dataset(self.val_split, train=False)
        if stage == "predict":
            if self.predict_dir is None:
                raise ValueError(
                    "predict needs a folder of images: pass --data.predict_dir <folder>"
                )
            self.predict_set = PredictImageDataset(self.predict_dir, self.eval_transform)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True, collate_fn=collate_segmentation)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False, collate_fn=collate_segmentation)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False, collate_fn=collate_segmentation)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, train=False, collate_fn=collate_segmentation)
