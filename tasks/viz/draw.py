"""Drawing predictions on images: boxes with legible labels, mask overlays, top-k text.

Used by the prediction writers (files) and by the validation images in TensorBoard, so a
class has the same colour everywhere. Images are ``uint8 [H, W, 3]`` numpy arrays.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_colour(index: int) -> tuple[int, int, int]:
    """A fixed, saturated colour for class ``index`` (golden-ratio hue steps, so
    neighbouring classes differ clearly)."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``background`` (ITU-R BT.601 luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _font(image_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(10, min(24, image_height // 30)))


def draw_detections(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    class_names: Sequence[str] = (),
    line_width: int = 2,
) -> np.ndarray:
    """Boxes ``(x1, y1, x2, y2)`` in pixels, outlined in their class colour, each with a
    ``"name 0.87"`` label on a filled tag of that colour. Returns a new ``[H, W, 3]`` array."""
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = _font(canvas.height)
    for box, label, score in zip(boxes, labels, scores, strict=True):
        colour = class_colour(int(label))
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line_width)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = f"{name} {score:.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        w, h = right - left + 4, bottom - top + 4
        # Above the box when there is room, else inside its top edge.
        ty = y1 - h if y1 - h >= 0 else y1
        tx = min(max(x1, 0), max(canvas.width - w, 0))
        draw.rectangle((tx, ty, tx + w, ty + h), fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), text, fill=text_colour(colour), font=font)
    return np.asarray(canvas)


def overlay_mask(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[int], alpha: float = 0.5
) -> np.ndarray:
    """``image`` blended with the colours of ``mask`` (``[H, W]`` class indices);
    ``palette`` is a flat ``[r, g, b, ...]`` list of 256 colours."""
    colours = np.asarray(list(palette) + [0] * (768 - len(palette)), np.float32).reshape(256, 3)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours[mask]
    return blended.round().clip(0, 255).astype(np.uint8)


def draw_topk(
    image: np.ndarray, labels: Sequence[int], scores: Sequence[float], class_names: Sequence[str]
) -> np.ndarray:
    """The top-k classes and probabilities written in a band under the image."""
    canvas = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    font = _font(max(canvas.height, 240))
    lines = [
        f"{class_names[i] if 0 <= i < len(class_names) else i} {s:.2f}"
        for i, s in zip(labels, scores, strict=True)
    ]
    probe = ImageDraw.Draw(canvas)
    line_h = max(probe.textbbox((0, 0), t, font=font)[3] for t in lines) + 3 if lines else 0
    width = max([canvas.width, *(probe.textbbox((0, 0), t, font=font)[2] + 6 for t in lines)])
    out = Image.new("RGB", (width, canvas.height + line_h * len(lines) + 4), (255, 255, 255))
    out.paste(canvas, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (text, label) in enumerate(zip(lines, labels, strict=True)):
        y = canvas.height + 2 + k * line_h
        draw.rectangle((0, y, 4, y + line_h - 2), fill=class_colour(int(label)))
        draw.text((7, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(out)


def denormalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalized ``[3, H, W]`` float image back to ``uint8 [H, W, 3]`` (mean and std in
    0-1 pixel units, as albumentations' ``Normalize`` takes them)."""
    chw = (
        image * np.asarray(std, np.float32)[:, None, None]
        + np.asarray(mean, np.float32)[:, None, None]
    )
    return (chw.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)
