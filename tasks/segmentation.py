"""Semantic segmentation task (Mobile DeepLabv3); ``SegmentationEvaluation``, the
segmentation half of every task scored with one confusion matrix over the whole set (this
one and ``tasks.multitask``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from backbones.layers import Padding
from heads.deeplabv3 import deeplabv3_mobilenet_v2, multiscale_flip_predict, predict_padded
from tasks.base import BaseTask
from tasks.metrics.logged import metric_names
from tasks.metrics.segmentation import SegmentationMetrics


class SegmentationEvaluation:
    """The segmentation half of a task, mixed in before ``BaseTask``: pixels scored with one
    confusion matrix per evaluation (``SegmentationMetrics``: summed over every process, so
    the numbers are the set's under DDP). The task has ``ignore_index``, the mask value left
    out of the loss and the metrics."""

    ignore_index: int

    def update_segmentation(
        self, metrics: SegmentationMetrics, log_probs: Tensor, mask: Tensor
    ) -> None:
        """Add one image: ``log_probs`` ``[1, C, h, w]`` and its ``mask`` ``[1, h, w]``
        (int64 labels or ``ignore_index``), at the same size."""
        loss_sum = F.nll_loss(log_probs, mask, ignore_index=self.ignore_index, reduction="sum")
        metrics.update(log_probs.argmax(dim=1), mask, loss_sum)

    def log_segmentation(
        self,
        metrics: SegmentationMetrics,
        prefix: str,
        class_names: Sequence[str],
        loss_name: str = "loss",
        prog_bar: bool = True,
    ) -> dict[str, Tensor]:
        """Log the finished evaluation and reset ``metrics``: ``<prefix>/<loss_name>`` (mean
        over every labelled pixel of the set), ``<prefix>/miou``, ``<prefix>/pixel_acc`` and
        ``<prefix>/iou_<class>`` for each class present in targets or predictions.

        Returns:
            ``metrics.compute()``: ``confmat`` ``[C, C]`` (rows: true class), ``iou``
            ``[C]``, ``miou``, ``pixel_acc``, ``loss``.
        """
        result = metrics.compute()  # sums the confusion matrices of all processes
        metrics.reset()
        # Identical on every process after the sync, so no further reduction is needed.
        self.log(f"{prefix}/{loss_name}", result["loss"].float())
        self.log(f"{prefix}/miou", result["miou"].float(), prog_bar=prog_bar)
        self.log(f"{prefix}/pixel_acc", result["pixel_acc"].float())
        for name, iou in zip(metric_names(class_names), result["iou"].tolist(), strict=True):
            if not math.isnan(iou):  # class absent from targets and predictions
                self.log(f"{prefix}/iou_{name}", float(iou))
        return result


class SegmentationTask(SegmentationEvaluation, BaseTask):
    """Train and evaluate ``deeplabv3_mobilenet_v2``.

    Args:
        num_classes: number of classes with background (21 for VOC, 19 for Cityscapes). The
            ``mobilezoo`` command takes it from a data module that has it as an argument
            (the demo); a value given here must match the data's.
        output_stride: 16 or 8 (``None``: the one ``weights`` were built with, else 16).
        aspp: add the ASPP branches (the paper's larger head).
        width_mult: backbone width multiplier.
        weights_backbone: weights whose backbone starts the model: an ImageNet name
            (``"imagenet"``, ``"imagenet_v2"``, ``"imagenet_tf"``, ``"imagenet_tf_8bit"``), a
            ``mobilezoo convert`` file, a checkpoint of any zoo task or a torchvision
            state dict (``heads.weights_loader``).
        weights: trained weights of the whole model: a name of
            ``heads.pretrained.list_weights("deeplabv3_mobilenet_v2")``, a file from
            ``mobilezoo convert`` or a checkpoint; with another ``num_classes`` the class
            predictors are re-initialized (fine-tuning); another model's weights give the
            backbone. See ``heads.deeplabv3_mobilenet_v2``.
        dropout: dropout before the classifier.
        frozen_stages, freeze_bn: see ``backbones.MobileNetV2``.
        bn_momentum: BatchNorm momentum of backbone and head (PyTorch convention).
        divisible_by, padding: backbone channel rounding and convolution padding (see
            ``backbones.MobileNetV2``); ``None``: what ``weights`` needs, else the default
            (8, ``"torch"``). The values used are saved in checkpoints.
        align_corners: of the final upsampling (``None``: what ``weights`` needs, else
            ``False``; TF's DeepLab models need ``True``).
        ignore_index: label value left out of loss and metrics (void).
        eval_scales: input scales of validation/test/predict; several give multi-scale
            evaluation, e.g. ``[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`` (paper's "MF" rows).
        eval_flip: also average over left-right flips at evaluation.
        eval_pad_to: evaluate single-scale as TF DeepLab does: pad each image to this
            square size (513 for VOC) instead of running it at its own size (see
            ``heads.predict_padded``); for reproducing TF-converted models' numbers.
        class_names: names for the per-class IoU logs (default: the data module's
            ``class_names``, else the class index).
        channels_last: see ``DetectionTask``.
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``,
            ``decay_norm_and_bias``, ``freeze_backbone_steps``: see ``BaseTask``; DeepLab's
            recipe is SGD (momentum 0.9, weight decay 4e-5) with ``WarmupPolyLR`` (power
            0.9) stepped every iteration.

    Batches are dicts with ``image`` ``[B, 3, H, W]``, ``mask`` ``[B, H, W]`` int64 and
    ``size`` ``[B, 2]`` (each image's own height and width; evaluation batches may be
    padded, and every image is evaluated at its own size, unpadded).

    Logged: ``train/loss``, ``val/loss``, ``val/miou``, ``val/pixel_acc``,
    ``val/iou_<class>`` (and ``test/*``), from one confusion matrix over the whole set.
    """

    #: the registered builder of ``model`` (how export recognizes this task's checkpoints)
    builder = "deeplabv3_mobilenet_v2"
    architecture_hparams = (
        "num_classes", "width_mult", "aspp", "divisible_by", "padding", "align_corners",
    )  # fmt: skip
    evaluation_hparams = ("output_stride", "eval_scales", "eval_flip", "eval_pad_to")

    def __init__(
        self,
        num_classes: int = 21,
        output_stride: Literal[8, 16, 32] | None = None,
        aspp: bool = False,
        width_mult: float = 1.0,
        weights_backbone: str | None = None,
        weights: str | None = None,
        dropout: float = 0.1,
        frozen_stages: int = 0,
        freeze_bn: bool = False,
        bn_momentum: float = 0.1,
        divisible_by: int | None = None,
        padding: Padding | None = None,
        align_corners: bool | None = None,
        ignore_index: int = 255,
        eval_scales: tuple[float, ...] = (1.0,),
        eval_flip: bool = False,
        eval_pad_to: int | None = None,
        class_names: list[str] | None = None,
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not eval_scales or any(s <= 0 for s in eval_scales):
            raise ValueError(f"eval_scales must be positive numbers, got {eval_scales}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(class_names)} names but num_classes={num_classes}"
            )
        self.model = self.build_model(
            deeplabv3_mobilenet_v2, weights, weights_backbone,
            {"width_mult": width_mult, "divisible_by": divisible_by, "padding": padding,
             "align_corners": align_corners, "output_stride": output_stride},
            num_classes=num_classes, aspp=aspp, dropout=dropout, frozen_stages=frozen_stages,
            freeze_bn=freeze_bn, bn_momentum=bn_momentum,
        )  # fmt: skip
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.eval_scales = tuple(float(s) for s in eval_scales)
        self.eval_flip = eval_flip
        self.eval_pad_to = eval_pad_to
        self.class_names = list(class_names) if class_names is not None else None
        self.channels_last = channels_last
        self.val_metrics = SegmentationMetrics(num_classes, ignore_index)
        self.test_metrics = SegmentationMetrics(num_classes, ignore_index)
        #: the summed confusion matrix of the last finished evaluation, per stage
        self.last_confmat: dict[str, Tensor] = {}

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> logits ``[B, num_classes, H, W]``."""
        return self.model(images)

    def setup_data(self, data: Any, stage: str) -> None:
        super().setup_data(data, stage)
        if self.class_names is None:
            names = getattr(data, "class_names", None)
            if names is not None and len(names) == self.num_classes:
                self.class_names = list(names)

    # -- loss ------------------------------------------------------------------------------
    def _loss_terms(self, log_probs: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
        """Summed pixel NLL and the number of labelled pixels."""
        loss_sum = F.nll_loss(log_probs, masks, ignore_index=self.ignore_index, reduction="sum")
        return loss_sum, (masks != self.ignore_index).sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        images, masks = batch["image"], batch["mask"]
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self(images)
        loss_sum, valid = self._loss_terms(F.log_softmax(logits, dim=1), masks)
        # A crop with only void pixels gives loss 0 (not NaN) and no gradient.
        loss = loss_sum / valid.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    # -- evaluation ------------------------------------------------------------------------
    def _log_probs(self, images: Tensor) -> Tensor:
        """Log class probabilities ``[B, C, H, W]`` at the configured scales and flips."""
        if self.eval_scales == (1.0,) and not self.eval_flip:
            if self.eval_pad_to is not None:
                return F.log_softmax(predict_padded(self.model, images, self.eval_pad_to), dim=1)
            return F.log_softmax(self(images), dim=1)
        probs = multiscale_flip_predict(self.model, images, self.eval_scales, self.eval_flip)
        return probs.clamp(min=1e-12).log()

    def _per_image(self, batch: dict[str, Any]) -> list[tuple[Tensor, slice, slice]]:
        """Log-probabilities of every image at its own size: ``[(log_probs [1, C, h, w],
        rows, cols)]``. Equal-sized batches run as one batch."""
        images = batch["image"]
        sizes = batch.get("size")
        height, width = images.shape[-2:]
        if sizes is None or bool((sizes == sizes.new_tensor([height, width])).all()):
            log_probs = self._log_probs(images)
            full = (slice(0, height), slice(0, width))
            return [(log_probs[i : i + 1], *full) for i in range(images.shape[0])]
        out = []
        for i, (h, w) in enumerate(sizes.tolist()):
            rows, cols = slice(0, h), slice(0, w)
            out.append((self._log_probs(images[i : i + 1, :, rows, cols]), rows, cols))
        return out

    def _eval_step(self, batch: dict[str, Any], metrics: SegmentationMetrics) -> None:
        masks = batch["mask"]
        orig_sizes = batch.get("orig_size")
        for i, (log_probs, rows, cols) in enumerate(self._per_image(batch)):
            if orig_sizes is not None:  # scored at the photo's own size (``base_size``)
                log_probs = _resized(log_probs, orig_sizes[i])
                rows, cols = slice(0, log_probs.shape[-2]), slice(0, log_probs.shape[-1])
            self.update_segmentation(metrics, log_probs, masks[i : i + 1, rows, cols])

    def _log_epoch_metrics(self, metrics: SegmentationMetrics, prefix: str) -> None:
        names = self.class_names or [str(i) for i in range(self.num_classes)]
        result = self.log_segmentation(metrics, prefix, names, prog_bar=prefix == "val")
        self.last_confmat[prefix] = result["confmat"].cpu()

    def _metrics(self, prefix: str) -> SegmentationMetrics:
        return self.val_metrics if prefix == "val" else self.test_metrics

    def eval_epoch_start(self, prefix: str) -> None:
        super().eval_epoch_start(prefix)
        self._metrics(prefix).reset()

    def eval_step(self, batch: dict[str, Any], stage: str, prefix: str) -> None:
        self._eval_step(batch, self._metrics(prefix))

    def eval_epoch_end(self, stage: str, prefix: str) -> None:
        self._log_epoch_metrics(self._metrics(prefix), prefix)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Label maps at each image's original size.

        Returns one dict per image: ``mask`` ``uint8 [H, W]`` (CPU) and ``path``.
        """
        out = []
        orig_sizes = batch.get("orig_size")
        for i, (log_probs, _, _) in enumerate(self._per_image(batch)):
            if orig_sizes is not None:
                log_probs = _resized(log_probs, orig_sizes[i])
            label = log_probs.argmax(dim=1)[0].to(torch.uint8).cpu()
            out.append({"mask": label, "path": batch["path"][i]})
        return out


def _resized(log_probs: Tensor, size: Tensor) -> Tensor:
    """``log_probs`` ``[1, C, h, w]`` upsampled (bilinear) to ``size`` = (H, W)."""
    target = tuple(size.tolist())
    if target == tuple(log_probs.shape[-2:]):
        return log_probs
    return F.interpolate(log_probs, size=target, mode="bilinear", align_corners=False)
