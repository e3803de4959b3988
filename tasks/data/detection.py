"""The base of the box data modules (COCO layout, Cityscapes boxes): SSD's transforms at a
square input size, batches of images and per-image targets, ``predict`` on a folder."""

from __future__ import annotations

import albumentations as A
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tasks.data.base import BaseDataModule, LoaderOptions
from tasks.data.predict import PredictImageDataset, collate_predict
from tasks.data.ssd_transforms import Augmentation, ssd_eval_transforms, ssd_train_transforms
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD, normalize

Target = dict[str, Tensor]


def collate_detection(samples: list[tuple[Tensor, Target]]) -> tuple[Tensor, list[Target]]:
    """Stack images ``[B, 3, H, W]``; keep the targets (varying box counts) as a list."""
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


class DetectionDataModule(BaseDataModule):
    """What the box data modules share: the SSD pipeline, the loaders and ``predict``.

    Subclasses fill ``self._datasets`` in ``setup``: ``"train"``, ``"validate"`` and
    ``"test"``, data sets of ``(image [3, S, S], target)`` (see ``collate_detection``);
    ``train_transform()`` and ``eval_transform()`` build their pipelines.

    Args:
        image_size: square model input size ``S`` (at least 32).
        augmentation: ``"ssd"`` (photometric, zoom-out, min-IoU crop, flip), ``"flip"``
            or ``"none"`` (see ``ssd_train_transforms``).
        zoom_out_ratio: largest zoom-out canvas ratio of the ``"ssd"`` augmentation.
        mean, std: normalization (default maps pixels to [-1, 1]).
        predict_dir: folder of images for ``predict`` (searched recursively), the same
            option name as the segmentation and classification data modules.
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
    """

    def __init__(
        self,
        image_size: int = 320,
        augmentation: Augmentation = "ssd",
        zoom_out_ratio: float = 4.0,
        mean: tuple[float, float, float] = SYMMETRIC_MEAN,
        std: tuple[float, float, float] = SYMMETRIC_STD,
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(),
    ) -> None:
        super().__init__(loader)
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.image_size = image_size
        self.augmentation = augmentation
        self.zoom_out_ratio = zoom_out_ratio
        self.mean, self.std = tuple(mean), tuple(std)
        self.predict_dir = predict_dir
        self._datasets: dict[str, Dataset] = {}

    def train_transform(self) -> A.Compose:
        """The training pipeline (``augmentation``, then resize to ``image_size``)."""
        return ssd_train_transforms(
            self.image_size, self.mean, self.std, self.augmentation, self.zoom_out_ratio
        )

    def eval_transform(self) -> A.Compose:
        """The evaluation pipeline (resize to ``image_size``, normalize)."""
        return ssd_eval_transforms(self.image_size, self.mean, self.std)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._datasets["train"], train=True, collate_fn=collate_detection)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._datasets["validate"], train=False, collate_fn=collate_detection)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._datasets["test"], train=False, collate_fn=collate_detection)

    def predict_dataloader(self) -> DataLoader:
        if self.predict_dir is None:
            raise ValueError("set data.predict_dir (a folder of images) to run predict")
        transform = A.Compose(
            [A.Resize(self.image_size, self.image_size), normalize(self.mean, self.std)]
        )
        dataset = PredictImageDataset(self.predict_dir, transform)
        return self._loader(dataset, train=False, collate_fn=collate_predict)
