"""Image classification task: cross-entropy, top-1 / top-5 accuracy."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from backbones.layers import Padding
from heads.classifier import mobilenet_v2_classifier
from tasks.base import BaseTask
from tasks.metrics.logged import SetMean


class ClassificationTask(BaseTask):
    """Train and evaluate ``mobilenet_v2_classifier``.

    Args:
        num_classes: number of classes. The ``mobilezoo`` command takes it from a data
            module that has it as an argument (the demo); a value given here must match the
            data's.
        width_mult: backbone width multiplier.
        weights: ``None``, ``"imagenet"``, ``"imagenet_v2"``, a TF entry (``"imagenet_tf"``,
            ``"imagenet_tf_8bit"``: inputs in [-1, 1]), a ``mobilezoo convert`` file, a
            checkpoint or a torchvision state dict file (``heads.weights_loader``); another
            model's weights (a detector's, a segmenter's) give the backbone.
        weights_backbone: the same kinds of weights, of which only the backbone is loaded.
        dropout: dropout before the last layer (paper: 0.2).
        frozen_stages: backbone stages to freeze (see ``backbones.MobileNetV2``).
        label_smoothing: cross-entropy label smoothing (0 = off).
        divisible_by, padding: backbone channel rounding and convolution padding (see
            ``backbones.MobileNetV2``); ``None``: what ``weights`` needs, else the default
            (8, ``"torch"``). The values used are saved in checkpoints.
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``,
            ``decay_norm_and_bias``, ``freeze_backbone_steps``: see ``BaseTask``.

    Batches are ``(images [B, 3, H, W], labels [B])``. Logged: ``train/loss``,
    ``val/loss``, ``val/top1``, ``val/top5`` (and ``test/*``). With fewer than 5 classes
    the top-k metric is named after its k: ``val/top4`` on 4 classes (top-5 would be 1.0
    by definition). ``last_confmat["val"]`` / ``["test"]`` hold the confusion matrix of the
    last finished evaluation (rows: true class).
    """

    #: the registered builder of ``model`` (how export recognizes this task's checkpoints)
    builder = "mobilenet_v2_classifier"
    architecture_hparams = ("num_classes", "width_mult", "divisible_by", "padding")

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        weights: str | None = None,
        dropout: float = 0.2,
        frozen_stages: int = 0,
        label_smoothing: float = 0.0,
        divisible_by: int | None = None,
        padding: Padding | None = None,
        weights_backbone: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = self.build_model(
            mobilenet_v2_classifier, weights, weights_backbone,
            {"width_mult": width_mult, "divisible_by": divisible_by, "padding": padding},
            num_classes=num_classes, dropout=dropout, frozen_stages=frozen_stages,
        )  # fmt: skip
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top_k = min(5, num_classes)
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                f"top{top_k}": MulticlassAccuracy(num_classes, top_k=top_k, average="micro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        # The set's mean loss, equal under DDP (see SetMean)
        self.eval_loss = nn.ModuleDict({"val": SetMean(), "test": SetMean()})
        self.confmats = nn.ModuleDict(
            {p: MulticlassConfusionMatrix(num_classes) for p in ("val", "test")}
        )
        self.last_confmat: dict[str, Tensor] = {}
        self.num_classes = num_classes

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> logits ``[B, num_classes]``."""
        return self.model(images)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        loss = self.criterion(self(images), labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=images.shape[0])
        return loss

    def eval_step(self, batch: tuple[Tensor, Tensor], stage: str, prefix: str) -> None:
        images, labels = batch
        metrics = self.val_metrics if prefix == "val" else self.test_metrics
        logits = self(images)
        loss_sum = F.cross_entropy(
            logits, labels, reduction="sum", label_smoothing=self.criterion.label_smoothing
        )
        metrics.update(logits, labels)
        self.confmats[prefix].update(logits.argmax(dim=1), labels)
        self.eval_loss[prefix].update(loss_sum, images.shape[0])
        self.log(f"{prefix}/loss", self.eval_loss[prefix], batch_size=images.shape[0])
        self.log_dict(metrics, prog_bar=prefix == "val", batch_size=images.shape[0])

    def eval_epoch_end(self, stage: str, prefix: str) -> None:
        # compute() sums over processes (a collective: every rank calls it)
        self.last_confmat[prefix] = self.confmats[prefix].compute().cpu()
        self.confmats[prefix].reset()

    def predict_step(self, batch: dict[str, Any] | Tensor, batch_idx: int) -> dict[str, Any]:
        """Top-5 classes of each image of a ``collate_predict`` batch (or an image tensor).

        Returns ``labels`` and ``scores`` (softmax probabilities), both ``[B, k]``, and the
        image ``paths`` (``None`` for a plain tensor batch).
        """
        images = batch["image"] if isinstance(batch, dict) else batch
        probs = torch.softmax(self(images), dim=1)
        scores, labels = probs.topk(min(5, self.num_classes), dim=1)
        paths = batch["path"] if isinstance(batch, dict) else None
        return {"labels": labels, "scores": scores, "paths": paths}
