"""Predictions of the joint model: boxes drawn over the coloured mask, the mask as a PNG,
and the boxes as COCO results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.io import write_jpeg
from torchvision.utils import draw_bounding_boxes

from tasks.data.io import read_image
from tasks.data.seg_transforms import voc_palette
from tasks.writers.predictions import DetectionPredictionWriter, checked_fraction


class MultiTaskPredictionWriter(DetectionPredictionWriter):
    """For an input ``<predict_dir>/a/b.jpg`` write ``<output_dir>/a/b.jpg`` (the image
    blended with the coloured mask, boxes with class names and scores above
    ``draw_threshold`` on top), ``<output_dir>/a/b.png`` (palette PNG, value = mask class)
    and ``<output_dir>/detections.json`` (COCO results, as ``DetectionPredictionWriter``).

    Args:
        output_dir: folder to write to (created).
        draw_threshold: smallest score drawn (all detections go to the JSON).
        line_width: box outline width in pixels.
        alpha: weight of the mask colours in the picture (background stays uncoloured).
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        draw_threshold: float = 0.3,
        line_width: int = 2,
        alpha: float = 0.5,
    ) -> None:
        super().__init__(output_dir, draw_threshold, line_width)
        self.alpha = checked_fraction("alpha", alpha)
        self.palette = voc_palette()
        self._colours = np.asarray(self.palette, dtype=np.float32).reshape(256, 3)

    def write_image(self, det: dict[str, Any], names: list[str], cat_ids: list[int]) -> None:
        """Add one image's detections to the results and write its mask and its picture
        (``det`` also holds the ``mask`` ``[H, W]`` of class indices)."""
        path = det["path"]
        boxes, scores, labels, keep = self.add_detections(det, cat_ids)
        mask = det["mask"].numpy()
        png = Image.fromarray(mask)
        png.putpalette(self.palette)
        png.save(self.target(path, ".png"))
        image = read_image(path).astype(np.float32)
        weight = np.where(mask[..., None] > 0, self.alpha, 0.0)
        blended = (1 - weight) * image + weight * self._colours[mask]
        picture = torch.from_numpy(blended.round().clip(0, 255).astype(np.uint8))
        picture = picture.permute(2, 0, 1).contiguous()
        if keep:
            text = [f"{names[labels[i]] if labels[i] < len(names) else labels[i]} "
                    f"{scores[i]:.2f}" for i in keep]  # fmt: skip
            kept = torch.tensor([boxes[i] for i in keep], dtype=torch.float32)
            picture = draw_bounding_boxes(picture, kept, labels=text, width=self.line_width)
        write_jpeg(picture, str(self.target(path, ".jpg")), quality=90)
