"""A generated classification set in the ImageFolder layout: one shape kind per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks.data.base import LoaderOptions
from tasks.data.demo.generated import GeneratedDemo
from tasks.data.demo.shapes import SHAPES, draw_shape, random_color, soften, textured_background
from tasks.data.imagefolder import ImageFolderDataModule
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD


def make_classification_demo(
    root: Path, num_classes: int, train_per_class: int, val_per_class: int, size: int, seed: int
) -> None:
    """Write ``root/{train,val}/<shape>/NNNN.jpg``: a shape of random colour, size and place."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for shape in SHAPES[:num_classes]:
            folder = root / split / shape
            folder.mkdir(parents=True)
            for i in range(count):
                image = textured_background(rng, size, size)
                side = rng.uniform(0.35, 0.8) * size
                x1, y1 = rng.uniform(0, size - side, size=2)
                draw_shape(image, None, shape, (x1, y1, x1 + side, y1 + side), random_color(rng))
                soften(image, rng).save(folder / f"{i:04d}.jpg", quality=90)


class DemoClassificationDataModule(GeneratedDemo, ImageFolderDataModule):
    """The shapes demo set, generated on first use (deterministic in ``seed``).

    Args:
        root: where the set lives; default ``$MOBILEZOO_CACHE/demo_classification_<hash>``.
        num_classes: number of shape classes (2 to 6).
        train_per_class: training images per class.
        val_per_class: validation images per class.
        generated_size: side of the generated images in pixels.
        seed: random seed of the generator.
        image_size, resize_size, min_scale, mean, std, predict_dir, loader: see
            ``ImageFolderDataModule``.
    """

    make = staticmethod(make_classification_demo)

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 4,
        train_per_class: int = 100,
        val_per_class: int = 25,
        generated_size: int = 96,
        seed: int = 0,
        image_size: int = 64,
        resize_size: int = 72,
        min_scale: float = 0.35,
        mean: tuple[float, float, float] = SYMMETRIC_MEAN,
        std: tuple[float, float, float] = SYMMETRIC_STD,
        predict_dir: str | None = None,
        loader: LoaderOptions = LoaderOptions(),
    ) -> None:
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
        spec = {
            "kind": "classification",
            "num_classes": num_classes,
            "train_per_class": train_per_class,
            "val_per_class": val_per_class,
            "size": generated_size,
            "seed": seed,
        }
        super().__init__(
            self.demo_root(root, spec), image_size, resize_size, min_scale, mean, std,
            predict_dir=predict_dir, loader=loader,
        )  # fmt: skip
