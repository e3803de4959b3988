"""A generated segmentation set in the PASCAL VOC layout: shapes on textured backgrounds.

Each class is a shape drawn in its own band of hues (so a small network trained for a few
minutes on a CPU can tell the classes apart by colour and outline). Real JPEG images and
palette PNG masks (value = class, 255 = void on a one-pixel band along
every object outline, like VOC's) under ``VOCdevkit/VOC2012``, with ``train.txt`` and
``val.txt`` split lists, so the demo exercises exactly the code path of the real data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.demo.generated import GeneratedDemo
from tasks.data.demo.shapes import draw_shape, soften, textured_background
from tasks.data.seg_transforms import IGNORE_INDEX, voc_palette
from tasks.data.voc import VOCSegmentationDataModule

#: the shape of each foreground class (class 0 is the background)
DEMO_SHAPES = ("circle", "square", "triangle", "cross", "diamond")


def class_color(rng: np.random.Generator, label: int, num_classes: int) -> tuple[int, int, int]:
    """A saturated colour whose hue lies in the band of ``label`` (1..num_classes-1)."""
    bands = num_classes - 1
    hue = ((label - 1) / bands + rng.uniform(-0.15, 0.15) / bands) % 1.0
    saturation, value = int(rng.integers(170, 256)), int(rng.integers(170, 256))
    rgb = Image.new("HSV", (1, 1), (int(hue * 255), saturation, value)).convert("RGB")
    r, g, b = rgb.getpixel((0, 0))
    return int(r), int(g), int(b)


def _muted(image: Image.Image) -> Image.Image:
    """The background, 60% desaturated so that the saturated shapes stand out."""
    return Image.blend(image, image.convert("L").convert("RGB"), 0.6)


def _void_outline(mask: np.ndarray) -> None:
    """Mark pixels next to a label change as void, in place (VOC's object outlines)."""
    edge = np.zeros(mask.shape, dtype=bool)
    vertical = mask[1:, :] != mask[:-1, :]
    horizontal = mask[:, 1:] != mask[:, :-1]
    edge[1:, :] |= vertical
    edge[:, 1:] |= horizontal
    mask[edge] = IGNORE_INDEX


def make_segmentation_demo(
    root: Path, num_classes: int, train_images: int, val_images: int, size: int, seed: int
) -> None:
    """Write the demo set under ``root/VOCdevkit/VOC2012``.

    Every image holds one to three shapes of random class, colour, size and position
    (later shapes may overlap earlier ones; the mask follows the visible shape).
    """
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    palette = voc_palette()
    index = 0
    for split, count in (("train", train_images), ("val", val_images)):
        ids = []
        for _ in range(count):
            image_id = f"demo_{index:05d}"
            index += 1
            image = _muted(textured_background(rng, size, size))
            mask = np.zeros((size, size), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(1, num_classes))
                side = rng.uniform(0.3, 0.6) * size
                x1, y1 = rng.uniform(-0.1 * side, size - 0.9 * side, size=2)
                box = (x1, y1, x1 + side, y1 + side)
                colour = class_color(rng, label, num_classes)
                draw_shape(image, mask, DEMO_SHAPES[label - 1], box, colour, label)
            _void_outline(mask)
            soften(image, rng).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
            png = Image.fromarray(mask)
            png.putpalette(palette)
            png.save(voc / "SegmentationClass" / f"{image_id}.png")
            ids.append(image_id)
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


class DemoSegmentationDataModule(GeneratedDemo, VOCSegmentationDataModule):
    """The generated shapes set in VOC layout, created on first use (deterministic in
    ``seed``).

    Args:
        root: where the set lives; default ``$MOBILEZOO_CACHE/demo_segmentation_<hash>``.
        num_classes: background + ``num_classes - 1`` shape classes (2 to 6).
        train_images: number of training images.
        val_images: number of validation images.
        generated_size: side of the generated images in pixels.
        seed: random seed of the generator.
        crop_size, min_scale, max_scale: DeepLab's augmentation, see
            ``SegmentationDataModule``.
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
        **kwargs: ``flip``, ``mean``, ``std``, ``predict_dir`` of
            ``SegmentationDataModule``.
    """

    make = staticmethod(make_segmentation_demo)

    def __init__(
        self,
        root: str | None = None,
        num_classes: int = 4,
        train_images: int = 240,
        val_images: int = 48,
        generated_size: int = 96,
        seed: int = 0,
        crop_size: int | tuple[int, int] = 96,
        min_scale: float = 0.75,
        max_scale: float = 1.5,
        loader: LoaderOptions = LoaderOptions(batch_size=16),
        **kwargs: Any,
    ) -> None:
        if not 2 <= num_classes <= len(DEMO_SHAPES) + 1:
            raise ValueError(f"num_classes must be in 2..{len(DEMO_SHAPES) + 1}, got {num_classes}")
        spec = {
            "kind": "segmentation",
            "version": 3,
            "num_classes": num_classes,
            "train_images": train_images,
            "val_images": val_images,
            "size": generated_size,
            "seed": seed,
        }
        super().__init__(
            self.demo_root(root, spec), "train", "val", False, None, None, loader=loader,
            crop_size=crop_size, min_scale=min_scale, max_scale=max_scale, **kwargs,
        )  # fmt: skip
        self.class_names = ("background", *DEMO_SHAPES[: num_classes - 1])
