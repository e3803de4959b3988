"""A generated classification set in the ImageFolder layout: one shape kind per class."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from tasks.data.cache import generate_once, resolve_root, spec_hash
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


class DemoClassificationDataModule(ImageFolderDataModule):
    """The shapes demo set, generated on first use (deterministic in ``seed``).

    Args:
        root: where the set lives; default ``$MOBILEZOO_CACHE/demo_classification_<hash>``.
        num_classes: number of shape classes (2 to 6).
        train_per_class: training images per class.
        val_per_class: validation images per class.
        generated_size: side of the generated images in pixels.
        seed: random seed of the generator.
        image_size, resize_size, min_scale, batch_size, ...: see ``ImageFolderDataModule``.
    """

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
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        eval_batch_size: int | None = None,
        on_bad_sample: Literal["raise", "skip"] = "raise",
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
        root_path = resolve_root(root, f"demo_classification_{spec_hash(spec)}")
        super().__init__(
            str(root_path), image_size, resize_size, min_scale, mean, std,
            predict_dir=predict_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, eval_batch_size=eval_batch_size,
            on_bad_sample=on_bad_sample,
        )  # fmt: skip
        self.spec = spec

    def prepare_data(self) -> None:
        s = self.spec
        generate_once(
            self.root,
            s,
            lambda tmp: make_classification_demo(
                tmp,
                s["num_classes"],
                s["train_per_class"],
                s["val_per_class"],
                s["size"],
                s["seed"],
            ),
        )
