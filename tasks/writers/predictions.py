"""Callbacks that write ``mobilezoo predict`` results to files, one output per input image.

Output names follow the input's path relative to the predict folder, so ``a/x.jpg`` gives
``a/x.<ext>``; when two inputs share a stem (``x.jpg`` and ``x.png``) the input's extension
joins the name (``x_jpg.<ext>``, ``x_png.<ext>``) so neither replaces the other.

With ``output_dir=None`` a writer writes to ``<run folder>/predictions``: the folder of the
checkpoint's run when ``mobilezoo predict --ckpt_path`` names one.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from tasks.data.io import read_image
from tasks.data.seg_transforms import voc_palette
from tasks.viz.draw import draw_detections, overlay_mask


def output_stems(paths: Sequence[str | Path], root: str | Path) -> dict[str, str]:
    """Map each input path to a unique output stem (relative path without extension)."""
    root = Path(root)
    rel = {}
    for p in paths:
        path = Path(p)
        rel[str(p)] = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    counts = Counter(str(r.with_suffix("")) for r in rel.values())
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for key, r in rel.items():
        stem = str(r.with_suffix(""))
        if counts[stem] > 1:
            stem = f"{stem}_{r.suffix.lstrip('.').lower()}"
        base, n = stem, 1
        while stem in taken:  # x_jpg.png and x.jpg + x.png in one folder: a number decides
            n += 1
            stem = f"{base}_{n}"
        taken.add(stem)
        stems[key] = stem
    return stems


def checked_fraction(name: str, value: float) -> float:
    """``value`` when it lies in [0, 1] (a score threshold, a blending weight), else a
    ``ValueError`` naming ``name``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def _predict_dataset(trainer: Trainer) -> Any:
    loaders = trainer.predict_dataloaders
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    return getattr(loader, "dataset", None)


class _FolderWriter(BasePredictionWriter):
    """What the writers share: the output folder and the input-to-output names."""

    def __init__(self, output_dir: str | None, write_interval: str) -> None:
        super().__init__(write_interval=write_interval)  # type: ignore[arg-type]
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self._root = Path(".")
        self._stems: dict[str, str] = {}
        self._ids: dict[str, int] = {}
        self._dir = Path("predictions")

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dataset = _predict_dataset(trainer)
        self._root = Path(getattr(dataset, "folder", "."))
        paths = [str(p) for p in getattr(dataset, "paths", [])]
        self._stems = output_stems(paths, self._root)
        self._ids = {p: i + 1 for i, p in enumerate(paths)}
        run = Path(trainer.log_dir or trainer.default_root_dir)
        self._dir = self.output_dir if self.output_dir is not None else run / "predictions"
        if self._dir.resolve() == self._root.resolve():
            raise ValueError(
                f"output_dir {self._dir} is the predict folder itself; choose another folder "
                "so the inputs are not overwritten"
            )

    def target(self, path: str | Path, suffix: str) -> Path:
        """Output file of input ``path`` with ``suffix`` (e.g. ``".png"``); parents made."""
        stem = self._stems.get(str(path)) or Path(path).stem
        out = self._dir / f"{stem}{suffix}"
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    def relative(self, path: str | Path) -> Path:
        p = Path(path)
        return p.relative_to(self._root) if p.is_relative_to(self._root) else Path(p.name)


class DetectionPredictionWriter(_FolderWriter):
    """Write each predicted image with its boxes drawn, and ``detections.json``.

    Files: ``{output_dir}/<input path relative to the predict folder, .jpg>`` (boxes in a
    fixed colour per class, labelled ``name score`` on a filled tag, for scores of at least
    ``draw_threshold``) and ``{output_dir}/detections.json``: COCO results ``[{image_id,
    file_name, category_id, bbox: [x, y, w, h], score}]`` with ``file_name`` the input's
    relative path and ``image_id`` its 1-based position in the sorted folder listing. At the
    end it reports how many detections were drawn and at what threshold; ``mobilezoo
    predict --draw_threshold 0.1`` changes the threshold for one run.

    Args:
        output_dir: folder to write to (created); ``None``: ``<run folder>/predictions``.
        draw_threshold: smallest score drawn on the images (all go to the JSON).
        line_width: box outline width in pixels.
    """

    def __init__(
        self, output_dir: str | None = None, draw_threshold: float = 0.3, line_width: int = 2
    ) -> None:
        super().__init__(output_dir, write_interval="batch")
        self.draw_threshold = checked_fraction("draw_threshold", draw_threshold)
        self.line_width = line_width
        self._results: list[dict[str, Any]] = []
        self._drawn = 0
        self._images = 0
        self._best = 0.0

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._results, self._drawn, self._images, self._best = [], 0, 0, 0.0

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
        for det in prediction:
            self.write_image(det, names, cat_ids)

    def write_image(self, det: dict[str, Any], names: list[str], cat_ids: list[int]) -> None:
        """Add one image's detections to the results (``add_detections``) and write its
        picture; a writer of other pictures overrides this.

        Args:
            det: ``path`` of the input image and its ``boxes``, ``scores`` and ``labels``.
            names: class names by label.
            cat_ids: COCO category id by label.
        """
        path = det["path"]
        boxes, scores, labels, keep = self.add_detections(det, cat_ids)
        drawn = draw_detections(
            read_image(path),
            [boxes[i] for i in keep],
            [labels[i] for i in keep],
            [scores[i] for i in keep],
            names,
            self.line_width,
        )
        Image.fromarray(drawn).save(self.target(path, ".jpg"), quality=90)

    def add_detections(
        self, det: dict[str, Any], cat_ids: list[int]
    ) -> tuple[list[list[float]], list[float], list[int], list[int]]:
        """Add one image's detections (``path``, ``boxes``, ``scores``, ``labels``) to the
        COCO results and to the counts of the closing report.

        Returns:
            The boxes, scores and labels as lists, and the indices of those to draw (score
            at least ``draw_threshold``).
        """
        path = det["path"]
        rel = self.relative(path)
        image_id = self._ids.get(str(path), len(self._ids) + 1)
        boxes = det["boxes"].float().cpu().tolist()
        scores = det["scores"].float().cpu().tolist()
        labels = det["labels"].cpu().tolist()
        for box, score, label in zip(boxes, scores, labels, strict=True):
            self._results.append(
                {
                    "image_id": image_id,
                    "file_name": rel.as_posix(),
                    "category_id": cat_ids[label] if label < len(cat_ids) else label + 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
        keep = [i for i, s in enumerate(scores) if s >= self.draw_threshold]
        self._drawn += len(keep)
        self._images += 1
        self._best = max([self._best, *scores])
        return boxes, scores, labels, keep

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        results, counts = self._results, [self._drawn, self._images]
        best = self._best
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (results, counts, best))
            results = [r for part in parts for r in part[0]]
            counts = [sum(p[1][0] for p in parts), sum(p[1][1] for p in parts)]
            best = max(p[2] for p in parts)
        if trainer.is_global_zero:
            self._dir.mkdir(parents=True, exist_ok=True)
            results.sort(key=lambda r: (r["image_id"], -r["score"]))
            (self._dir / "detections.json").write_text(json.dumps(results))
            rank_zero_info(detection_report(len(results), *counts, self.draw_threshold, best))
            rank_zero_info(f"wrote detections.json and the drawn images to {self._dir}")


def detection_report(total: int, drawn: int, images: int, threshold: float, best: float) -> str:
    """One line on what predict drew, with a hint when a threshold hides everything."""
    line = (
        f"predict: {total} detections on {images} images; {drawn} drawn at score >= {threshold:g}"
    )
    if drawn == 0 and total > 0:
        line += (
            f" (the highest score is {best:.3f}; draw more with --draw_threshold "
            f"{max(best - 0.005, 0.0):.2f})"
        )
    return line


class SegmentationPredictionWriter(_FolderWriter):
    """Writes each predicted mask as a palette PNG and, optionally, a colour overlay.

    For an input ``<predict_dir>/a/b.jpg`` it writes ``<output_dir>/a/b.png`` (pixel value =
    class index, palette colours for viewing) and ``<output_dir>/a/b_overlay.jpg``.

    Args:
        output_dir: folder for the outputs (created); ``None``: ``<run folder>/predictions``.
        overlay: also write the image blended with the coloured mask.
        alpha: weight of the mask colours in the overlay.

    The palette is the data module's ``palette`` (flat ``[r, g, b, ...]``) when it has one
    (Cityscapes), else the PASCAL VOC colour map.
    """

    def __init__(
        self, output_dir: str | None = None, overlay: bool = True, alpha: float = 0.5
    ) -> None:
        super().__init__(output_dir, write_interval="batch")
        self.overlay = overlay
        self.alpha = checked_fraction("alpha", alpha)
        self._count = 0

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._count = 0

    def _palette(self, trainer: Trainer) -> list[int]:
        palette = list(getattr(trainer.datamodule, "palette", None) or voc_palette())
        return palette + [0] * (768 - len(palette))

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Sequence[dict[str, Any]],
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        palette = self._palette(trainer)
        for item in prediction:
            source = item["path"]
            target = self.target(source, ".png")
            mask = item["mask"].numpy()
            png = Image.fromarray(mask)
            png.putpalette(palette)  # turns the "L" image into a "P" one
            png.save(target)
            if self.overlay:
                blended = overlay_mask(read_image(source), mask, palette, self.alpha)
                Image.fromarray(blended).save(
                    target.with_name(target.stem + "_overlay.jpg"), quality=90
                )
            self._count += 1

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank_zero_info(f"wrote {self._count} masks to {self._dir}")


class ClassificationPredictionWriter(_FolderWriter):
    """Writes ``predictions.csv``: one row per image (its path relative to the predict
    folder) with its top-5 classes and scores.

    Class names come from the data module's ``classes`` when it has them.

    Args:
        output_dir: folder for ``predictions.csv`` (created); ``None``: ``<run
            folder>/predictions``.
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(output_dir, write_interval="epoch")

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:  # type: ignore[no-untyped-def]
        names = getattr(trainer.datamodule, "classes", None)
        rows = []
        for batch in predictions:
            paths = batch["paths"] or [None] * len(batch["labels"])  # a plain tensor batch
            for path, labels, scores in zip(paths, batch["labels"].tolist(), batch["scores"].tolist(), strict=True):  # fmt: skip
                top = [names[i] if names else str(i) for i in labels]
                rel = self.relative(path).as_posix() if path is not None else ""
                rows.append([rel, *(f"{c}:{p:.4f}" for c, p in zip(top, scores, strict=True))])
        self._dir.mkdir(parents=True, exist_ok=True)
        suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = self._dir / f"predictions{suffix}.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["path", *(f"top{k + 1}" for k in range(len(rows[0]) - 1 if rows else 0))]
            )
            writer.writerows(rows)
        rank_zero_info(f"wrote {len(rows)} predictions to {path}")


__all__ = [
    "ClassificationPredictionWriter",
    "DetectionPredictionWriter",
    "SegmentationPredictionWriter",
    "checked_fraction",
    "output_stems",
]
