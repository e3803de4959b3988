"""ImageNet-style classification data: ``{root}/{split}/{class}/*.jpg``.

Checked at setup: the class folders of every split must be the same; images are found in
class folders and their sub-folders (as torchvision's ``ImageFolder``). Ignored, counted and
logged in one line per split: hidden entries (``.ipynb_checkpoints``, ``.DS_Store``: never
classes, never images), files without an image extension, files outside a class folder,
and class folders without images.
"""

from __future__ import annotations

import os
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from tasks.data.base import BaseDataModule, LoaderOptions
from tasks.data.io import read_image
from tasks.data.predict import IMAGE_EXTENSIONS, PredictImageDataset, collate_predict
from tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize, to_chw_tensor
from tasks.data.validate import Repairs


def class_folders(root: Path) -> list[str]:
    """Class names of an ImageFolder split: its sub-folders, sorted (index = label).
    Hidden folders (``.ipynb_checkpoints``...) are not classes."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not _hidden(p.name))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def class_images(folder: Path, repairs: Repairs) -> list[Path]:
    """Image files under a class folder, sub-folders included, sorted; other files are
    counted in ``repairs``."""
    images = []
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        hidden = [d for d in dirnames if _hidden(d)]
        repairs.add("hidden folders ignored", len(hidden))
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if _hidden(d):
                continue
            if real in seen:  # a symlink back to a folder already read: never loop
                repairs.add("folders reached twice through a symlink ignored")
                continue
            seen.add(real)
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if _hidden(name):
                repairs.add("hidden files ignored")
            elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
            else:
                repairs.add(f"files without an image extension {IMAGE_EXTENSIONS} ignored")
    return sorted(images)


class ImageFolderDataset(Dataset):
    """Images in one folder per class; class index = position in the sorted class names.

    Returns ``(image [3, H, W] float32, label int)``.
    """

    def __init__(self, root: str | os.PathLike, transform: A.BasicTransform | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"expected an image folder at {self.root} with one sub-folder per class"
            )
        self.classes = class_folders(self.root)
        if not self.classes:
            raise FileNotFoundError(
                f"{self.root} has no class sub-folders ({self.root}/<class>/*.jpg)"
            )
        repairs = Repairs(self.root)
        for entry in self.root.iterdir():
            if _hidden(entry.name):
                repairs.add("hidden folders ignored" if entry.is_dir() else "hidden files ignored")
            elif not entry.is_dir():
                repairs.add("files outside a class folder ignored")
        self.samples = []
        for label, name in enumerate(self.classes):
            images = class_images(self.root / name, repairs)
            if not images:
                repairs.add("class folders without images")
            self.samples += [(path, label) for path in images]
        repairs.report()
        if not self.samples:
            raise FileNotFoundError(
                f"no images with extensions {IMAGE_EXTENSIONS} under {self.root}"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        image = read_image(path)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return to_chw_tensor(np.asarray(image, dtype=np.float32)), label


def classification_transforms(
    train: bool,
    image_size: int,
    resize_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    min_scale: float = 0.08,
) -> A.Compose:
    """Train: random resized crop + flip. Eval: resize shorter side, centre crop."""
    if train:
        ops = [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(min_scale, 1.0)),
            A.HorizontalFlip(p=0.5),
        ]
    else:
        ops = [A.SmallestMaxSize(max_size=resize_size), A.CenterCrop(image_size, image_size)]
    return A.Compose([*ops, normalize(mean, std)])


class ImageFolderDataModule(BaseDataModule):
    """Classification data in the ImageNet layout: ``{root}/train/<class>/*`` and
    ``{root}/val/<class>/*``.

    Args:
        root: data set folder.
        image_size: crop size fed to the model.
        resize_size: evaluation resizes the shorter side to this, then centre-crops.
        min_scale: smallest area fraction of the random resized crop.
        mean: per-channel mean for normalization (torchvision's ImageNet mean by default,
            matching its ImageNet weights).
        std: per-channel standard deviation.
        train_split: sub-folder of the training images.
        val_split: sub-folder of the validation images (also used by ``test``).
        predict_dir: folder of images for ``predict`` (any layout; evaluation transform).
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        resize_size: int = 256,
        min_scale: float = 0.08,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        train_split: str = "train",
        val_split: str = "val",
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(),
    ) -> None:
        super().__init__(loader)
        self.root = Path(root).expanduser()
        self.image_size = image_size
        self.resize_size = resize_size
        self.min_scale = min_scale
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_split, self.val_split = train_split, val_split
        self.predict_dir = predict_dir

    def _dataset(self, split: str, train: bool) -> ImageFolderDataset:
        tf = classification_transforms(
            train, self.image_size, self.resize_size, self.mean, self.std, self.min_scale
        )
        return ImageFolderDataset(self.root / split, tf)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_set = self._dataset(self.train_split, train=True)
        if stage in ("fit", "validate", "test"):
            self.val_set = self._dataset(self.val_split, train=False)
            train_classes = getattr(self, "train_set", self.val_set).classes
            if self.val_set.classes != train_classes:
                only_train = sorted(set(train_classes) - set(self.val_set.classes))
                only_val = sorted(set(self.val_set.classes) - set(train_classes))
                raise ValueError(
                    f"class folders differ between {self.root / self.train_split} and "
                    f"{self.root / self.val_split} (labels would not match): only in "
                    f"{self.train_split}: {only_train[:10]}, only in {self.val_split}: "
                    f"{only_val[:10]}"
                )

        if stage == "predict":
            if self.predict_dir is None:
                raise ValueError("predict needs data.init_args.predict_dir: a folder of images")
            tf = classification_transforms(
                False, self.image_size, self.resize_size, self.mean, self.std, self.min_scale
            )
            self.predict_set = PredictImageDataset(self.predict_dir, tf)

    @property
    def num_classes(self) -> int:
        return len(self.val_set.classes)

    @property
    def classes(self) -> list[str] | None:
        """Class names (sorted sub-folders of the training split), if that folder exists."""
        folder = self.root / self.train_split
        if not folder.is_dir():
            return None
        return class_folders(folder)

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set, train=False)

    def test_dataloader(self):
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self):
        return self._loader(self.predict_set, train=False, collate_fn=collate_predict)
