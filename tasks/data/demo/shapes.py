"""Drawing blocks for the generated demo data sets: textured backgrounds and shapes.

Every function takes a ``numpy.random.Generator`` so a data set is a pure function of its
seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")


def textured_background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth random colour field plus stripes and noise, ``RGB`` of ``width x height``."""
    coarse = rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
    array = np.asarray(img, dtype=np.int16)
    period = rng.uniform(6, 24)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    array = array + (stripes[..., None] * rng.uniform(5, 20)).astype(np.int16)
    array = array + rng.normal(0, 6, size=array.shape).astype(np.int16)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Outline of ``shape`` inscribed in ``box`` = (x1, y1, x2, y2), for ``ImageDraw.polygon``.

    Circle and ring are approximated with 48 points so every shape is a polygon.
    """
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return list(zip(cx + w / 2 * np.cos(t), cy + h / 2 * np.sin(t), strict=True))
    if shape == "square":
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if shape == "triangle":
        return [(cx, y1), (x2, y2), (x1, y2)]
    if shape == "diamond":
        return [(cx, y1), (x2, cy), (cx, y2), (x1, cy)]
    if shape == "cross":
        a, b = w / 3, h / 3
        return [
            (x1 + a, y1), (x1 + 2 * a, y1), (x1 + 2 * a, y1 + b), (x2, y1 + b),
            (x2, y1 + 2 * b), (x1 + 2 * a, y1 + 2 * b), (x1 + 2 * a, y2), (x1 + a, y2),
            (x1 + a, y1 + 2 * b), (x1, y1 + 2 * b), (x1, y1 + b), (x1 + a, y1 + b),
        ]  # fmt: skip
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def draw_shape(
    image: Image.Image,
    mask: np.ndarray | None,
    shape: str,
    box: tuple[float, float, float, float],
    color: tuple[int, int, int],
    label: int = 1,
) -> None:
    """Draw a filled ``shape`` into ``image`` (in place) and ``label`` into ``mask`` ([H, W]).

    The ring is a circle with a hole a third of its size (the hole shows the background
    and stays unlabelled in the mask).
    """
    layer = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(layer)
    draw.polygon(shape_polygon(shape, box), fill=255)
    if shape == "ring":
        x1, y1, x2, y2 = box
        dx, dy = (x2 - x1) / 3, (y2 - y1) / 3
        draw.polygon(shape_polygon("circle", (x1 + dx, y1 + dy, x2 - dx, y2 - dy)), fill=0)
    image.paste(Image.new("RGB", image.size, color), (0, 0), layer)
    if mask is not None:
        mask[np.asarray(layer) > 127] = label


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour that stands out from the mid-grey backgrounds."""
    hue = rng.uniform(0, 1)
    rgb = np.array(Image.new("HSV", (1, 1), (int(hue * 255), 230, 240)).convert("RGB"))[0, 0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def soften(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A light random blur, so edges are not all pixel-sharp."""
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))


@dataclass(frozen=True)
class SceneOptions:
    """How a generated object-scene set (the detection and joint demos) is drawn: the
    ``scene`` argument of their data modules (``data.init_args.scene.num_train`` in a
    config; ``SceneOptions(num_train=20)`` from Python). The set is a pure function of
    these values and the class count.

    Args:
        num_train, num_val: number of training / validation images.
        generated_size: side of the generated images in pixels.
        max_objects: most objects in one image.
        min_object_size, max_object_size: object side as a fraction of the image side.
        seed: random seed of the generator.

    Raises:
        ValueError: a value out of range, named with the value given.
    """

    num_train: int = 1000
    num_val: int = 100
    generated_size: int = 128
    max_objects: int = 4
    min_object_size: float = 0.2
    max_object_size: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.min_object_size <= self.max_object_size < 1:
            raise ValueError(
                "need 0 < min_object_size <= max_object_size < 1, got "
                f"{self.min_object_size} and {self.max_object_size}"
            )
        if self.num_train < 1 or self.num_val < 1 or self.max_objects < 1:
            raise ValueError(
                f"num_train, num_val and max_objects must be >= 1, got {self.num_train}, "
                f"{self.num_val}, {self.max_objects}"
            )


def scene_spec(kind: str, num_classes: int, scene: SceneOptions, **extra: Any) -> dict[str, Any]:
    """The spec of a generated object scene set: ``kind``, the generator's arguments
    (``num_classes``, the ``scene``'s values, ``extra`` ones), after a ``ValueError`` when
    ``num_classes`` is out of range."""
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)}, got {num_classes}")
    return {
        "kind": kind, "num_classes": num_classes, "num_train": scene.num_train,
        "num_val": scene.num_val, "size": scene.generated_size,
        "max_objects": scene.max_objects, "min_object_size": scene.min_object_size,
        "max_object_size": scene.max_object_size, **extra, "seed": scene.seed,
    }  # fmt: skip
