"""Object detection task: SSDLite-MobileNetV2 trained with the multibox loss and scored
with the official COCO metrics; ``COCOEvaluation``, the detection half of every task scored
with the 12 COCO numbers (this one and ``tasks.multitask``)."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from backbones.layers import Padding
from heads.anchors import AnchorLayout, best_anchor_iou
from heads.detection_loss import MultiBoxLossOptions
from heads.postprocess import PostprocessOptions, ScoreActivation
from heads.ssdlite import ssdlite_mobilenet_v2
from tasks.base import BaseTask, option_group
from tasks.checkpoints.categories import checked_categories, matched_categories
from tasks.metrics.coco import STAT_NAMES, COCOEvaluator, EvalBackend, batch_to_coco
from tasks.metrics.logged import SetMean

Batch = tuple[Tensor, list[dict[str, Tensor]]]


def evaluated_stages(stage: str) -> tuple[str, ...]:
    """The evaluations (``"validate"``, ``"test"``) that the trainer stage runs."""
    return {"fit": ("validate",), "validate": ("validate",), "test": ("test",)}.get(stage, ())


def to_original_pixels(boxes: Tensor, orig_size: Any, input_size: torch.Size) -> Tensor:
    """Boxes ``[N, 4]`` (x1, y1, x2, y2) in pixels of the ``input_size`` (H, W) network input,
    scaled to the image's original ``orig_size`` (H, W)."""
    height, width = input_size
    scale = torch.tensor(
        [orig_size[1] / width, orig_size[0] / height] * 2, dtype=boxes.dtype, device=boxes.device
    )
    return boxes * scale


class COCOEvaluation:
    """The detection half of a task scored with the 12 COCO numbers, mixed in before
    ``BaseTask``.

    It keeps the categories (contiguous label -> COCO category id and name: the data's after
    ``setup_coco``, saved in checkpoints so that predict needs no annotations), one
    ``COCOEvaluator`` per evaluated stage and the set's mean detection loss
    (``eval_loss["val"]`` / ``["test"]``, equal under DDP and for any batch size). The task
    has a ``model`` with ``forward_outputs``, ``compute_loss`` and ``postprocessor``
    (``heads.ssdlite.SSDLite``), an ``eval_backend``, and calls ``init_coco`` in
    ``__init__``.
    """

    model: Any
    eval_backend: EvalBackend
    #: a data module to name in the error raised when an evaluation has no ground truth
    coco_data_example = "COCODataModule"

    def init_coco(self, num_classes: int) -> None:
        """Categories ``1..num_classes`` named by their index until the data's are read."""
        self.category_ids: list[int] = list(range(1, num_classes + 1))
        self.class_names: list[str] = [str(i) for i in range(num_classes)]
        # (ids, names) of the data module, once setup has read them
        self._data_categories: tuple[list[int], list[str]] | None = None
        self._evaluators: dict[str, COCOEvaluator] = {}
        self.eval_loss = nn.ModuleDict({"val": SetMean(), "test": SetMean()})

    def setup_coco(self, data: Any, stage: str) -> None:
        """Take the data's categories (when it has them) and, for each evaluation the stage
        runs, its ground truth (``data.ground_truth(stage)``: a COCO dict)."""
        if hasattr(data, "category_ids"):
            self.category_ids = list(data.category_ids)
            self.class_names = list(getattr(data, "class_names", self.class_names))
            self._data_categories = (self.category_ids, self.class_names)
        for name in evaluated_stages(stage):
            self._evaluators[name] = COCOEvaluator(data.ground_truth(name), self.eval_backend)
        if stage == "fit" and hasattr(data, "input_boxes"):
            self.report_anchor_coverage(data.input_boxes(data.train_split), data.image_size)

    def report_anchor_coverage(self, boxes: Tensor, image_size: int) -> None:
        """Log how many training boxes ``[N, 4]`` (pixels of the ``image_size`` square input)
        overlap an anchor at the loss's IoU threshold, and the median size of those that do
        not (trained on their one best anchor); a warning when that is under two cells of the
        finest map: small objects, found less often."""
        if not len(boxes):
            return
        detector = getattr(self.model, "detector", self.model)  # the joint model's SSDLite
        size = (image_size, image_size)
        maps = detector.feature_sizes(size)
        anchors = detector.anchors_for(size, maps).cpu()
        threshold = detector.loss.options.iou_threshold
        missed = best_anchor_iou(boxes.float(), anchors) < threshold
        n, k = len(boxes), int(missed.sum())
        line = (
            f"anchors at {image_size}x{image_size}: {n - k} of {n} training boxes "
            f"({(n - k) / n:.0%}) overlap an anchor at IoU >= {threshold:g}"
        )
        if not k:
            rank_zero_info(line)
            return
        wh = boxes[missed, 2:] - boxes[missed, :2]
        side = float(wh.prod(dim=1).clamp(min=0).sqrt().median())
        cell = image_size / maps[0][0]  # the finest map's stride
        line += (
            f"; the other {k} (median side {side:.0f} px) are trained on the one anchor "
            "each overlaps most"
        )
        if side >= 2 * cell:
            # not small: their shapes or places fall between the anchors'
            rank_zero_info(f"{line} (anchor_layout 'torchvision' has more shapes)")
            return
        rank_zero_warn(
            f"{line}, and are found less often: under two cells ({cell:.0f} px) of the finest "
            "map. Small objects are SSD's weak point: a larger data.image_size gives them more "
            "pixels (at the square of the cost), not more anchors (anchors scale with the image)"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # BaseTask's checks
        checkpoint["category_ids"] = self.category_ids
        checkpoint["class_names"] = self.class_names

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)  # BaseTask's checks
        self.category_ids, self.class_names = self._checkpoint_categories(checkpoint)

    def _checkpoint_categories(self, checkpoint: dict[str, Any]) -> tuple[list[int], list[str]]:
        """The category ids and names after loading ``checkpoint``: its own without data
        (predict), else the data's if they are the same categories
        (``tasks.checkpoints.categories.matched_categories``)."""
        saved_ids = checkpoint.get("category_ids", self.category_ids)
        saved_names = checkpoint.get("class_names", self.class_names)
        trainer = getattr(self, "_trainer", None)
        source = f"checkpoint {trainer.ckpt_path}" if trainer else "the checkpoint"
        if self._data_categories is None:
            return checked_categories(saved_ids, saved_names, source)
        return matched_categories(saved_ids, saved_names, *self._data_categories, source)

    def _evaluator(self, stage: str) -> COCOEvaluator:
        if stage not in self._evaluators:
            raise RuntimeError(
                f"no COCO ground truth for {stage}: run through a Trainer with a data module "
                f"that has ground_truth(stage) (e.g. {self.coco_data_example})"
            )
        return self._evaluators[stage]

    def update_coco(
        self,
        outputs: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        input_size: torch.Size,
        stage: str,
        prefix: str,
        loss_name: str = "loss",
    ) -> None:
        """Add a batch to the evaluation of ``stage``: its detection loss to the set's mean
        (logged as ``<prefix>/<loss_name>``) and its detections to the COCO evaluator.

        Args:
            outputs: ``model.forward_outputs(images)``: ``cls_logits``, ``box_deltas``,
                ``anchors``.
            targets: per image ``boxes`` ``[N, 4]`` (input pixels), ``labels`` ``[N]``,
                ``image_id``, ``orig_size``.
            input_size: ``(H, W)`` of the network input.
            stage: ``"validate"`` or ``"test"``.
            prefix: ``"val"`` or ``"test"``: of the log key and of ``eval_loss``.
            loss_name: the loss's log key after the prefix.
        """
        losses = self.model.compute_loss(outputs, targets)
        # The loss is normalised by the batch's matched anchors: undo that and divide once
        # by the set's, so the logged loss depends neither on the batch size nor on the
        # processes.
        matched = losses["num_positives"]
        self.eval_loss[prefix].update(losses["loss"] * matched.clamp(min=1), matched)
        self.log(f"{prefix}/{loss_name}", self.eval_loss[prefix], batch_size=len(targets))
        detections = self.model.postprocessor(
            outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"], input_size
        )
        self._evaluator(stage).update(
            batch_to_coco(detections, targets, input_size, self.category_ids)
        )

    def log_coco(self, stage: str, prefix: str) -> None:
        """Log the 12 COCO numbers of ``stage`` as ``<prefix>/map`` ... ``<prefix>/mar_large``
        and start the next evaluation afresh."""
        evaluator = self._evaluator(stage)
        stats = evaluator.compute()  # collective under DDP: every rank gets the same numbers
        evaluator.reset()
        for name in STAT_NAMES:
            self.log(f"{prefix}/{name}", stats[name], prog_bar=name in ("map", "map_50"))


class DetectionTask(COCOEvaluation, BaseTask):
    """Train and evaluate ``ssdlite_mobilenet_v2``.

    Args:
        num_classes: object classes without background. The ``mobilezoo`` command takes it
            from a data module that has it as an argument (the demo); a value given here
            must match the data's.
        width_mult: backbone width multiplier.
        image_size: square input size. The ``mobilezoo`` command takes it from the data
            module's ``image_size``; a value given here must match the data's.
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
        divisible_by, padding: backbone channel rounding and convolution padding
            (``None``: what ``weights`` needs, else 8 and ``"torch"``).
        score_activation: ``"softmax"`` / ``"sigmoid"`` class scores (``None``: what
            ``weights`` needs, else softmax). Training uses the softmax multibox loss, so
            ``fit`` switches a sigmoid model (TF's ``coco_tf``) to softmax, with a log line.
            The architecture values used are saved in checkpoints.
        loss: matching and hard negative mining (``heads.MultiBoxLossOptions``:
            ``neg_pos_ratio`` 3, ``min_negatives`` 0, TF uses 3, ...).
        postprocess: detections from the raw outputs (``heads.PostprocessOptions``:
            ``score_threshold``, keep it low for evaluation, ``nms_iou``, ``max_detections``,
            ...); an evaluation option: the command line wins over a checkpoint's.
        class_prior: initial object probability of fresh class predictors (e.g. 0.01, the
            fine-tune recipes'); ``None``: their biases start at 0 (see ``heads.SSDLite``).
        eval_backend: ``"pycocotools"`` (reference) or ``"faster_coco_eval"``.
        channels_last: train on channels-last (NHWC) images, the layout in which oneDNN's
            depthwise convolutions are fastest on CPU (``benchmarks.throughput`` compares
            the two); the sums then run in another order, so loss and gradients differ from
            the default at float-rounding level (as they do between thread counts).
            Evaluation is unaffected. Off by default.
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``,
            ``decay_norm_and_bias``, ``freeze_backbone_steps``: see ``BaseTask``.

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
    evaluation_hparams = ("postprocess", "eval_backend")
    data_agreement = (("num_classes", "num_classes"), ("image_size", "image_size"))

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
        loss: MultiBoxLossOptions = MultiBoxLossOptions(),
        postprocess: PostprocessOptions = PostprocessOptions(),
        class_prior: float | None = None,
        eval_backend: EvalBackend = "pycocotools",
        channels_last: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = self.build_model(
            ssdlite_mobilenet_v2, weights, weights_backbone,
            {"width_mult": width_mult, "image_size": image_size, "anchor_layout": anchor_layout,
             "divisible_by": divisible_by, "padding": padding,
             "score_activation": score_activation},
            num_classes=num_classes, frozen_stages=frozen_stages,
            postprocess=option_group(PostprocessOptions, postprocess),
            loss=option_group(MultiBoxLossOptions, loss), class_prior=class_prior,
        )  # fmt: skip
        self.num_classes = num_classes
        self.image_size = image_size
        self.eval_backend = eval_backend
        self.channels_last = channels_last
        self.init_coco(num_classes)

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

    def setup_data(self, data: Any, stage: str) -> None:
        if stage == "predict":
            return  # images only: the checkpoint's classes and categories are used
        super().setup_data(data, stage)
        if evaluated_stages(stage) and not hasattr(data, "ground_truth"):
            raise TypeError(
                f"{type(data).__name__} has no ground_truth(stage); DetectionTask scores "
                "against COCO annotations (use COCODataModule or a subclass)"
            )
        self.setup_coco(data, stage)

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

    def eval_step(self, batch: Batch, stage: str, prefix: str) -> None:
        images, targets = batch
        outputs = self.model.forward_outputs(images)
        self.update_coco(outputs, targets, images.shape[-2:], stage, prefix)

    def eval_epoch_end(self, stage: str, prefix: str) -> None:
        self.log_coco(stage, prefix)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Detections per image in original pixels: ``boxes`` ``[N, 4]``, ``scores`` ``[N]``,
        ``labels`` ``[N]``, plus ``path`` and ``orig_size`` (H, W) from the batch."""
        images = batch["image"]
        detections = self.model(images)  # Lightning runs predict in eval mode
        out = []
        for det, path, orig in zip(detections, batch["path"], batch["orig_size"], strict=True):
            boxes = to_original_pixels(det["boxes"], orig, images.shape[-2:])
            out.append({**det, "boxes": boxes, "path": path, "orig_size": orig})
        return out
