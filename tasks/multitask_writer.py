"""Predictions of the joint model: boxes drawn over the coloured mask, the mask as a PNG,
and the boxes as COCO results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torchvision.io import write_jpeg
from torchvision.utils import draw_bounding_boxes

from tasks.data.io import read_image
from tasks.data.seg_transforms import voc_palette
from tasks.detection import DetectionPredictionWriter


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
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.palette = voc_palette()

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: list[dict[str, Any]],
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        names = list(getattr(pl_module, "class_names", []))
        cat_ids = list(getattr(pl_module, "category_ids", []))
        colours = np.asarray(self.palette, dtype=np.float32).reshape(256, 3)
        for det in prediction:
            path = Path(det["path"])
            rel = (
                path.relative_to(self._root) if path.is_relative_to(self._root) else Path(path.name)
            )
            image_id = self._ids.get(str(path), len(self._ids) + 1)
            boxes, scores = det["boxes"].float().cpu(), det["scores"].float().cpu()
            labels = det["labels"].cpu().tolist()
            for box, score, label in zip(boxes.tolist(), scores.tolist(), labels, strict=True):
                self._results.append(
                    {
                        "image_id": image_id,
                        "file_name": str(rel),
                        "category_id": cat_ids[label] if label < len(cat_ids) else label + 1,
                        "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                        "score": score,
                    }
                )
            mask = det["mask"].numpy()
            target = self.output_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            png = Image.fromarray(mask)
            png.putpalette(self.palette)
            png.save(target.with_suffix(".png"))
            image = read_image(path).astype(np.float32)
            weight = np.where(mask[..., None] > 0, self.alpha, 0.0)
            blended = (1 - weight) * image + weight * colours[mask]
            picture = torch.from_numpy(blended.round().clip(0, 255).astype(np.uint8))
            picture = picture.permute(2, 0, 1).contiguous()
            keep = scores >= self.draw_threshold
            if keep.any():
                text = [
                    f"{names[lb] if lb < len(names) else lb} {s:.2f}"
                    for lb, s in zip(
                        torch.tensor(labels, dtype=torch.int64)[keep].tolist(),
                        scores[keep].tolist(),
                        strict=True,
                    )
                ]
                picture = draw_bounding_boxes(
                    picture, boxes[keep], labels=text, width=self.line_width
                )
            write_jpeg(picture, str(target.with_suffix(".jpg")), quality=90)
