"""Pictures of validation and test, in TensorBoard and as PNG files next to the metrics.

``EvaluationFigures`` (added to every ``mobilezoo`` run) draws, at every validation, a fixed
handful of validation images (spread over the set) with the model's predictions (boxes with class and
score, mask overlays next to the ground truth, top-5 labels), and at the end of
``validate`` / ``test`` / ``fit`` the evaluation figures: per-class AP bars and
precision-recall curves (detection, from COCOeval's precision array), the confusion matrix
and per-class IoU bars (segmentation), the confusion matrix (classification).

Files, in the run folder (the logger's ``log_dir``): ``images/<stage>_examples.png`` (the
latest) and ``plots/<stage>_<figure>.png``. Nothing is written without a logger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from tasks.classification import ClassificationTask
from tasks.data.seg_transforms import voc_palette
from tasks.detection import DetectionTask
from tasks.segmentation import SegmentationTask
from tasks.viz.draw import denormalize, draw_detections, draw_topk, overlay_mask


# -- example images ------------------------------------------------------------------------
def _images(batch: Any) -> torch.Tensor:
    return batch["image"] if isinstance(batch, dict) else batch[0]


def _to_uint8(images: torch.Tensor, datamodule: Any) -> list[np.ndarray]:
    mean = getattr(datamodule, "mean", None)
    std = getattr(datamodule, "std", None)
    out = []
    for image in images.float().cpu().numpy():
        if mean is not None and std is not None:
            out.append(denormalize(image, mean, std))
        else:  # unknown normalization: stretch to the full range for viewing
            lo, hi = float(image.min()), float(image.max())
            scaled = (image - lo) / max(hi - lo, 1e-6)
            out.append((scaled.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    return out


@torch.no_grad()
def draw_examples(
    module: LightningModule, batch: Any, datamodule: Any = None, draw_threshold: float = 0.3
) -> list[np.ndarray]:
    """The task's predictions drawn on the images of ``batch`` (``uint8 [H, W, 3]`` each)."""
    images = _images(batch).to(module.device)
    pictures = _to_uint8(images, datamodule)
    if isinstance(module, DetectionTask):
        names = list(module.class_names)
        out = []
        for picture, det in zip(pictures, module.model(images), strict=True):
            keep = det["scores"] >= draw_threshold
            out.append(
                draw_detections(
                    picture,
                    det["boxes"][keep].cpu().tolist(),
                    det["labels"][keep].cpu().tolist(),
                    det["scores"][keep].cpu().tolist(),
                    names,
                )
            )
        return out
    if isinstance(module, SegmentationTask):
        palette = list(getattr(datamodule, "palette", None) or voc_palette())
        predicted = module(images).argmax(dim=1).cpu().numpy().astype(np.uint8)
        masks = batch["mask"].cpu().numpy() if isinstance(batch, dict) else None
        out = []
        for i, picture in enumerate(pictures):
            pred = overlay_mask(picture, predicted[i], palette)
            if masks is None:
                out.append(pred)
                continue
            truth = masks[i].clip(0, 255).astype(np.uint8)
            if "orig_size" in batch:  # a full-size mask of a photo resized for inference
                truth = _mask_at_image_size(truth, batch["orig_size"][i], batch["size"][i])
                truth = _padded_to(truth, picture.shape[:2])
            truth = overlay_mask(picture, truth, palette)
            gap = np.full((picture.shape[0], 4, 3), 255, np.uint8)
            out.append(np.concatenate([truth, gap, pred], axis=1))  # truth | prediction
        return out
    if isinstance(module, ClassificationTask):
        names = list(getattr(datamodule, "classes", None) or [])
        probs = torch.softmax(module(images), dim=1)
        scores, labels = probs.topk(min(5, probs.shape[1]), dim=1)
        return [
            draw_topk(p, lb, sc, names)
            for p, lb, sc in zip(pictures, labels.tolist(), scores.tolist(), strict=True)
        ]
    return pictures


def _mask_at_image_size(mask: np.ndarray, orig_size: Any, size: Any) -> np.ndarray:
    """The ``orig_size`` region of a padded mask, resized (nearest) to the image's ``size``."""
    (oh, ow), (h, w) = (int(v) for v in orig_size), (int(v) for v in size)
    return cv2.resize(mask[:oh, :ow], (w, h), interpolation=cv2.INTER_NEAREST)


def _padded_to(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` at the top left of a void (255) canvas of ``shape`` (H, W)."""
    out = np.full(shape, 255, np.uint8)
    out[: mask.shape[0], : mask.shape[1]] = mask
    return out


def image_grid(images: list[np.ndarray], columns: int = 4, gap: int = 4) -> np.ndarray:
    """Images side by side in rows of ``columns`` on a white canvas."""
    columns = max(1, min(columns, len(images)))
    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    width = columns * cell_w + (columns - 1) * gap
    canvas = np.full((len(rows) * (cell_h + gap) - gap, width, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = r * (cell_h + gap), c * (cell_w + gap)
            canvas[y : y + im.shape[0], x : x + im.shape[1]] = im
    return canvas


# -- evaluation figures --------------------------------------------------------------------
def _iou_per_class(confmat: np.ndarray) -> np.ndarray:
    tp = np.diag(confmat).astype(np.float64)
    union = confmat.sum(0) + confmat.sum(1) - tp
    return np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)


def evaluation_figures(
    module: LightningModule, prefix: str, datamodule: Any = None
) -> dict[str, Any]:
    """``{name: matplotlib figure}`` of the last finished evaluation with ``prefix``; class
    names from the task, else the data module (``classes`` or ``class_names``)."""
    from tasks.viz import plots

    if isinstance(module, DetectionTask):
        evaluator = module._evaluators.get("test" if prefix == "test" else "validate")
        details = getattr(evaluator, "last_details", None)
        if not details:
            return {}
        index = {c: i for i, c in enumerate(module.category_ids)}
        names = [
            module.class_names[index[c]] if c in index and index[c] < len(module.class_names) else str(c)
            for c in details["category_ids"]
        ]  # fmt: skip
        precision = details["precision"]
        return {
            "per_class_ap": plots.per_class_bars(
                names, plots.class_ap(precision).tolist(), f"{prefix} AP@[.5:.95] per class", "AP"
            ),
            "precision_recall": plots.precision_recall(
                precision, details["recall_thresholds"], details["iou_thresholds"], names
            ),
        }
    confmat = getattr(module, "last_confmat", {}).get(prefix)
    if confmat is None:
        return {}
    confmat = confmat.cpu().numpy() if isinstance(confmat, torch.Tensor) else np.asarray(confmat)
    names = list(
        getattr(module, "class_names", None)
        or getattr(datamodule, "classes", None)
        or getattr(datamodule, "class_names", None)
        or range(len(confmat))
    )
    if len(names) != len(confmat):
        names = list(range(len(confmat)))
    figures = {
        "confusion_matrix": plots.confusion_matrix(
            confmat, [str(n) for n in names], f"{prefix} confusion matrix (rows: true)"
        )
    }
    if isinstance(module, SegmentationTask):
        figures["per_class_iou"] = plots.per_class_bars(
            [str(n) for n in names], _iou_per_class(confmat).tolist(), f"{prefix} IoU per class", "IoU"
        )  # fmt: skip
    return figures


def _run_dir(trainer: Trainer) -> Path | None:
    """The logger's folder on rank 0; ``None`` on the other ranks and without a real logger
    (``logger=False``, or the dummy logger of ``fast_dev_run``): then nothing is drawn or
    written.

    Read from the first logger itself, by ``Trainer.log_dir``'s rule (``log_dir`` of a
    TensorBoard or CSV logger, else ``save_dir``), because ``Trainer.log_dir`` is a
    collective (it broadcasts rank 0's folder): called on rank 0 alone it waits for ranks
    that never join, and under DDP the run hangs or fails with "Connection closed by peer".
    Rank 0's logger holds the folder the broadcast would have sent.
    """
    if not trainer.loggers or trainer.fast_dev_run or not trainer.is_global_zero:
        return None
    logger = trainer.loggers[0]
    folder = (
        logger.log_dir if isinstance(logger, TensorBoardLogger | CSVLogger) else logger.save_dir
    )
    return Path(folder) if folder else None


class EvaluationFigures(Callback):
    """Validation images and evaluation figures in TensorBoard and as PNG files.

    Args:
        num_images: how many validation images to draw at each validation (always the
            same ones, spread evenly over the set); 0 turns the images off.
        figures: draw the end-of-evaluation figures (needs matplotlib).
        draw_threshold: smallest detection score drawn on the validation images.
    """

    def __init__(
        self, num_images: int = 8, figures: bool = True, draw_threshold: float = 0.3
    ) -> None:
        self.num_images = num_images
        self.figures = figures
        self.draw_threshold = draw_threshold
        self._batch: dict[str, Any] = {}
        self._validated = False  # a real validation (not the sanity check) ran in fit

    def fixed_batch(self, trainer: Trainer, prefix: str) -> Any:
        """``num_images`` samples spread evenly over the evaluation set (the same ones at
        every validation, and several classes even when the set is sorted by class),
        collated as the loader collates them; ``None`` when there is nothing to draw."""
        if prefix in self._batch:
            return self._batch[prefix]
        loaders = trainer.val_dataloaders if prefix == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = getattr(loader, "dataset", None)
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError:  # an iterable data set: no fixed handful to pick
            return None
        k = min(self.num_images, n)
        if k == 0:
            return None
        indices = sorted({int(i) for i in np.linspace(0, n - 1, k).round()})
        samples = [dataset[i] for i in indices]  # type: ignore[index]
        collate = getattr(loader, "collate_fn", None) or torch.utils.data.default_collate
        self._batch[prefix] = collate(samples)
        return self._batch[prefix]

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validated = False
        self._batch = {}

    def _log_examples(self, trainer: Trainer, pl_module: LightningModule, prefix: str) -> None:
        if trainer.sanity_checking or not self.num_images or _run_dir(trainer) is None:
            return
        batch = self.fixed_batch(trainer, prefix)
        if batch is None:
            return
        pictures = draw_examples(pl_module, batch, trainer.datamodule, self.draw_threshold)
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for i, picture in enumerate(pictures):
                    logger.experiment.add_image(f"{prefix}_images/{i}", picture, step, dataformats="HWC")  # fmt: skip
        path = (_run_dir(trainer) or Path(".")) / "images" / f"{prefix}_examples.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image_grid(pictures)).save(path)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_examples(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_examples(trainer, pl_module, "test")

    def _log_figures(self, trainer: Trainer, pl_module: LightningModule, prefix: str) -> None:
        run = _run_dir(trainer)
        if not self.figures or run is None:
            return
        try:
            figures = evaluation_figures(pl_module, prefix, trainer.datamodule)
        except ImportError as err:  # matplotlib missing
            rank_zero_info(f"evaluation figures skipped ({err}); pip install matplotlib")
            return
        from tasks.viz.plots import save_figure

        folder = run / "plots"
        for name, fig in figures.items():
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_figure(f"{prefix}_plots/{name}", fig, trainer.global_step, close=False)  # fmt: skip
            save_figure(fig, folder / f"{prefix}_{name}.png")
        if figures:
            rank_zero_info(f"{prefix} figures: {folder}")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._log_figures(trainer, pl_module, "val")
        elif not trainer.sanity_checking:
            self._validated = True

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_figures(trainer, pl_module, "test")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._validated:  # not the sanity check's numbers
            self._log_figures(trainer, pl_module, "val")
