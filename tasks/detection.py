"""Object detection task: SSDLite-MobileNetV2 trained with the multibox loss and scored
with the official COCO metrics. ``DetectionPredictionWriter`` lives in
``tasks.prediction_writers`` (imported here too, its old place)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from backbones.layers import Padding
from heads.anchors import AnchorLayout
from heads.postprocess import ScoreActivation
from heads.ssdlite import ssdlite_mobilenet_v2
from tasks.base import BaseTask, _default_optimizer
from tasks.cli_errors import ConfigError
from tasks.coco_eval import STAT_NAMES, COCOEvaluator, EvalBackend, batch_to_coco
from tasks.metrics import SetMean

Batch = tuple[Tensor, list[dict[str, Tensor]]]


class DetectionTask(BaseTask):
    """Train and evaluate ``ssdlite_mobilenet_v2``.

    Args:
        num_classes: object classes without background (must match the data).
        width_mult: backbone width multiplier.
        image_size: square input size; must equal the data module's ``image_size``.
        weights_backbone: weights whose backbone starts the model: an ImageNet name
            (``"imagenet"``, ``"imagenet_v2"``, ``"imagenet_tf"``, ``"imagenet_tf_8bit"``), a
            ``mobilezoo convert`` file, a checkpoint of any zoo task or a torchvision
            state dict (``heads.weights_loader``).
        weights: trained weights of the whole model: a name of
            ``heads.pretrained.list_weights("ssdlite_mobilenet_v2")``, a file from
            ``mobilezoo convert`` or a checkpoint; with another ``num_classes`` the class
            predictors are re-initialized (fine-tuning); another model's weights give the
            backbone. See ``heads.ssdlite_mobilenet_v2``.
        anchor_layout: ``"tf"`` (3 anchors on the first map) or ``"torchvision"`` (6).
        frozen_stages: backbone stages to freeze.
        neg_pos_ratio: hard negatives per positive anchor (3).
        min_negatives: hard negatives per image at least (0; TF uses 3).
        score_threshold: drop detections below this score (evaluation: keep it low).
        nms_iou: class-wise NMS IoU threshold.
        max_detections: detections per image.
        eval_backend: ``"pycocotools"`` (reference) or ``"faster_coco_eval"``.
        channels_last: train on channels-last (NHWC) images. On CPU oneDNN's depthwise
            convolutions run faster in that layout (1.5x per training step at 320 px in our
            runs, see ``python -m benchmarks``); the sums then run in another order, so loss
            and gradients differ from the default at float-rounding level (as they do
            between thread counts). Evaluation is unaffected. Off by default.
        divisible_by, padding: backbone channel rounding and convolution padding
            (``None``: what ``weights`` needs, else 8 and ``"torch"``).
        score_activation: ``"softmax"`` / ``"sigmoid"`` class scores (``None``: what
            ``weights`` needs, else softmax). Training uses the softmax multibox loss, so
            ``fit`` switches a sigmoid model (TF's ``coco_tf``) to softmax, with a log line.
        The architecture values used are saved in checkpoints.
        optimizer, lr_scheduler, lr_scheduler_interval, decay_norm_and_bias: see ``BaseTask``.

    Batches are ``(images [B, 3, H, W], targets)``; each target has ``boxes`` ``[N, 4]``
    (input pixels), ``labels`` ``[N]``, ``image_id`` and ``orig_size`` (H, W). Logged:
    ``train/loss``, ``train/loss_box``, ``train/loss_cls``, ``val/loss`` and the 12 COCO
    numbers ``val/map``, ``val/map_50``, ... ``val/mar_large`` (and ``test/*``).
    """

    #: the registered builder of ``model`` (how export recognizes this task's checkpoints)
    builder = "ssdlite_mobilenet_v2"
    architecture_hparams = (
        "num_classes", "width_mult", "image_size", "anchor_layout", "divisible_by", "padding",
        "score_activation",
    )  # fmt: skip
    evaluation_hparams = ("score_threshold", "nms_iou", "max_detections", "eval_backend")

    def __init__(
        self,
        num_classes: int = 80,
        width_mult: float = 1.0,
        image_size: int = 320,
        weights_backbone: str | None = None,
        weights: str | None = None,
        anchor_layout: AnchorLayout = "tf",
        frozen_stages: int = 0,
        divisible_by: int | None = None,
        padding: Padding | None = None,
        score_activation: ScoreActivation | None = None,
        neg_pos_ratio: float = 3.0,
        min_negatives: int = 0,
        score_threshold: float = 0.001,
        nms_iou: float = 0.55,
        max_detections: int = 100,
        eval_backend: EvalBackend = "pycocotools",
        channels_last: bool = False,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        decay_norm_and_bias: bool = False,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, lr_scheduler_interval, decay_norm_and_bias)
        arch = self.resolve_architecture(
            ssdlite_mobilenet_v2, weights, weights_backbone, width_mult=width_mult, image_size=image_size,
            anchor_layout=anchor_layout, divisible_by=divisible_by, padding=padding,
            score_activation=score_activation,
        )  # fmt: skip
        self.model = ssdlite_mobilenet_v2(
            num_classes=num_classes,
            weights_backbone=weights_backbone,
            weights=weights,
            **arch,
            frozen_stages=frozen_stages,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            max_detections=max_detections,
            neg_pos_ratio=neg_pos_ratio,
            min_negatives=min_negatives,
        )
        self.num_classes = num_classes
        self.image_size = image_size
        self.eval_backend = eval_backend
        self.channels_last = channels_last
        # Contiguous label -> COCO category id and name; taken from the data and stored in
        # checkpoints so that predict works without the training annotations.
        self.category_ids: list[int] = list(range(1, num_classes + 1))
        self.class_names: list[str] = [str(i) for i in range(num_classes)]
        self._evaluators: dict[str, COCOEvaluator] = {}
        # (ids, names) of the data module, once setup has read them
        self._data_categories: tuple[list[int], list[str]] | None = None
        # The set's mean loss, equal under DDP and for any batch size (see SetMean)
        self.eval_loss = nn.ModuleDict({"val": SetMean(), "test": SetMean()})

    def forward(self, images: Tensor) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """See ``heads.ssdlite.SSDLite.forward``."""
        return self.model(images)

    # -- set-up ----------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        post = self.model.postprocessor
        if post.score_activation != "softmax":
            # The multibox loss trains softmax scores; sigmoid described the loaded weights.
            rank_zero_warn(
                f"training with the softmax multibox loss: score_activation "
                f"{post.score_activation!r} -> 'softmax' (saved in the checkpoints)"
            )
            post.score_activation = "softmax"
            self.hparams["score_activation"] = "softmax"

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if dm is None or stage == "predict":
            return
        data_classes = getattr(dm, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ConfigError(
                f"model.num_classes={self.num_classes} but the data has {data_classes} classes"
            )
        data_size = getattr(dm, "image_size", None)
        if data_size is not None and data_size != self.image_size:
            raise ConfigError(
                f"model.image_size={self.image_size} but data.image_size={data_size}; "
                "set both to the same value"
            )
        if hasattr(dm, "category_ids"):
            self.category_ids = list(dm.category_ids)
            self.class_names = list(getattr(dm, "class_names", self.class_names))
            self._data_categories = (self.category_ids, self.class_names)
        for name in ("validate", "test"):
            if stage == name or (stage == "fit" and name == "validate"):
                if not hasattr(dm, "ground_truth"):
                    raise TypeError(
                        f"{type(dm).__name__} has no ground_truth(stage); DetectionTask scores "
                        "against COCO annotations (use COCODataModule or a subclass)"
                    )
                self._evaluators[name] = COCOEvaluator(dm.ground_truth(name), self.eval_backend)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # no non-finite state; the RNG state
        checkpoint["category_ids"] = self.category_ids
        checkpoint["class_names"] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # non-finite check, callback states, RNG
        self.category_ids, self.class_names = self._checkpoint_categories(checkpoint)

    # -- steps -----------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        losses = self.model.compute_loss(self.model.forward_outputs(images), targets)
        size = images.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=size)
        self.log("train/loss_box", losses["loss_box"], batch_size=size)
        self.log("train/loss_cls", losses["loss_cls"], batch_size=size)
        return losses["loss"]

    def _eval_step(self, batch: Batch, stage: str, prefix: str) -> None:
        images, targets = batch
        outputs = self.model.forward_outputs(images)
        losses = self.model.compute_loss(outputs, targets)
        # The loss is normalised by the batch's matched anchors: undo that and divide once
        # by the set's, so val/loss depends neither on the batch size nor on the processes.
        matched = losses["num_positives"]
        self.eval_loss[prefix].update(losses["loss"] * matched.clamp(min=1), matched)
        self.log(f"{prefix}/loss", self.eval_loss[prefix], batch_size=images.shape[0])
        detections = self.model.postprocessor(
            outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"], images.shape[-2:]
        )
        self._evaluator(stage).update(
            batch_to_coco(detections, targets, images.shape[-2:], self.category_ids)
        )

    def _evaluator(self, stage: str) -> COCOEvaluator:
        if stage not in self._evaluators:
            raise RuntimeError(
                f"no COCO ground truth for {stage}: run through a Trainer with a data module "
                "that has ground_truth(stage) (e.g. COCODataModule)"
            )
        return self._evaluators[stage]

    def _eval_epoch_end(self, stage: str, prefix: str) -> None:
        evaluator = self._evaluator(stage)
        stats = evaluator.compute()  # collective under DDP: every rank gets the same numbers
        evaluator.reset()
        for name in STAT_NAMES:
            self.log(f"{prefix}/{name}", stats[name], prog_bar=name in ("map", "map_50"))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "validate", "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("validate", "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test", "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Detections per image in original pixels: ``boxes``, ``scores``, ``labels``,
        plus ``path`` and ``orig_size`` from the batch."""
        images = batch["image"]
        detections = self.model(images)  # Lightning runs predict in eval mode
        height, width = images.shape[-2:]
        out = []
        for det, path, orig in zip(detections, batch["path"], batch["orig_size"], strict=True):
            scale = torch.tensor(
                [orig[1] / width, orig[0] / height] * 2,
                dtype=det["boxes"].dtype,
                device=det["boxes"].device,
            )
            out.append({**det, "boxes": det["boxes"] * scale, "path": path, "orig_size": orig})
        return out
