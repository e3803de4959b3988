"""Detection + segmentation in one pass: ``ssdlite_deeplabv3_mobilenet_v2`` trained with both
losses and scored with both official metrics (the 12 COCO numbers and one confusion matrix)."""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from backbones.layers import Padding
from heads.anchors import AnchorLayout
from heads.detection_loss import MultiBoxLossOptions
from heads.joint import ssdlite_deeplabv3_mobilenet_v2
from heads.postprocess import PostprocessOptions
from tasks.base import BaseTask, option_group
from tasks.detection import COCOEvaluation, to_original_pixels
from tasks.metrics.coco import EvalBackend
from tasks.metrics.segmentation import SegmentationMetrics
from tasks.segmentation import SegmentationEvaluation

Batch = tuple[Tensor, list[dict[str, Tensor]]]
SegSkip = Literal["layer_4", "layer_7", "layer_14"]


def _model_state(path: str | Path, builder: str) -> dict[str, Tensor]:
    """The model weights of a task checkpoint, converted file or state dict
    (``heads.weights_loader``), refused unless of ``builder``."""
    from heads.weights_loader import open_weights

    found = open_weights(path)
    if found.builder != builder:
        raise ValueError(f"{found.describe()}, not of {builder}")
    return found.state_dict()


@contextmanager
def _naming(option: str, path: str) -> Iterator[None]:
    """Errors of loading ``path`` name the option and the file (a checkpoint of the other
    task, of another width or not a checkpoint at all)."""
    try:
        yield
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        # the same type (callers may catch RuntimeError's size mismatches), with the names
        raise type(err)(f"{option} {path}: {' '.join(str(err).split())}") from err


class MultiTaskTask(COCOEvaluation, SegmentationEvaluation, BaseTask):
    """Train and evaluate the joint SSDLite + Mobile DeepLabv3 model.

    Args:
        num_det_classes: object classes without background (data: ``num_classes``).
        num_seg_classes: mask classes with background (data: ``num_seg_classes``). The
            ``mobilezoo`` command takes both from a data module that has ``num_classes`` as
            an argument (the demo: ``num_classes`` and ``num_classes + 1``); values given
            here must match the data's.
        width_mult: backbone width multiplier.
        image_size: square input size. The ``mobilezoo`` command takes it from the data
            module's ``image_size``; a value given here must match the data's.
        seg_skip: the decoder's stride-8 (``"layer_7"``), 4 or 16 map; ``None``: none.
        aspp: DeepLab's atrous branches in the segmentation head.
        seg_dropout: dropout before the segmentation classifier.
        weights_backbone: weights whose backbone starts the model: an ImageNet name
            (``"imagenet"``, ``"imagenet_v2"``, ``"imagenet_tf"``, ``"imagenet_tf_8bit"``), a
            ``mobilezoo convert`` file, a checkpoint of any zoo task or a torchvision
            state dict (``heads.weights_loader``).
        anchor_layout, frozen_stages, loss, postprocess, class_prior, eval_backend,
            channels_last: see ``DetectionTask``.
        loss_weighting: ``"fixed"``: ``det_weight * L_det + seg_weight * L_seg``;
            ``"uncertainty"``: Kendall et al. (CVPR 2018), ``sum_i w_i (exp(-s_i) L_i + s_i)``
            with one learned log-variance ``s_i`` per task (logged as ``train/weight_*``).
        det_weight, seg_weight: the fixed weights (with ``"uncertainty"``: the ``w_i``).
        ignore_index: mask value left out of the pixel loss and the confusion matrix.
        detection_checkpoint: start from a ``DetectionTask`` checkpoint (or an SSDLite
            state dict): backbone, extra layers and box head.
        segmentation_checkpoint: start from a ``SegmentationTask`` checkpoint (or a
            MobileDeepLabV3 state dict): its head and, unless a detection checkpoint is
            given too, its backbone (with both, the backbone comes from detection,
            whose box head was trained on exactly these stride-32 features). Both are
            read when the task is built, so they must still exist when a run is resumed
            or a checkpoint of this task is loaded (its weights then replace them).
        divisible_by, padding: backbone channel rounding and convolution padding (``None``:
            what the weights need, else 8 and ``"torch"``).
        weights: weights of any kind (``heads.weights_loader``): a checkpoint of this task
            (the whole model), of ``DetectionTask`` / an SSDLite file (the detector half), or
            of another model (the backbone); see ``heads.ssdlite_deeplabv3_mobilenet_v2``.
        **kwargs: ``optimizer``, ``lr_scheduler``, ``lr_scheduler_interval``,
            ``decay_norm_and_bias``, ``freeze_backbone_steps``: see ``BaseTask``.

    Batches are ``(images [B, 3, H, W], targets)`` with the detection keys and ``mask``:
    ``[H, W]`` in training, the image's size on disk in evaluation (logits are upsampled
    to it). Logged: ``train/loss``, ``train/loss_det``, ``train/loss_box``,
    ``train/loss_cls``, ``train/loss_seg``; ``val/loss_det``, ``val/loss_seg``, the 12 COCO
    numbers ``val/map`` ... ``val/mar_large``, ``val/miou``, ``val/pixel_acc``,
    ``val/iou_<class>`` (and ``test/*``).
    """

    #: the registered builder of ``model`` (how export recognizes this task's checkpoints)
    builder = "ssdlite_deeplabv3_mobilenet_v2"
    architecture_hparams = (
        "num_det_classes", "num_seg_classes", "width_mult", "image_size", "seg_skip", "aspp",
        "anchor_layout", "divisible_by", "padding",
    )  # fmt: skip
    evaluation_hparams = ("postprocess", "eval_backend")
    weights_hparams = (
        "weights", "weights_backbone", "detection_checkpoint", "segmentation_checkpoint",
    )  # fmt: skip
    data_agreement = (
        ("num_det_classes", "num_classes"), ("num_seg_classes", "num_seg_classes"),
        ("image_size", "image_size"),
    )  # fmt: skip
    coco_data_example = "COCOJointDataModule"

    def __init__(
        self,
        num_det_classes: int = 80,
        num_seg_classes: int = 81,
        width_mult: float = 1.0,
        image_size: int = 320,
        seg_skip: SegSkip | None = "layer_7",
        aspp: bool = False,
        seg_dropout: float = 0.1,
        weights_backbone: str | None = None,
        anchor_layout: AnchorLayout = "tf",
        frozen_stages: int = 0,
        loss: MultiBoxLossOptions = MultiBoxLossOptions(),
        postprocess: PostprocessOptions = PostprocessOptions(),
        class_prior: float | None = None,
        loss_weighting: Literal["fixed", "uncertainty"] = "fixed",
        det_weight: float = 1.0,
        seg_weight: float = 1.0,
        ignore_index: int = 255,
        detection_checkpoint: str | None = None,
        segmentation_checkpoint: str | None = None,
        eval_backend: EvalBackend = "pycocotools",
        channels_last: bool = False,
        divisible_by: int | None = None,
        padding: Padding | None = None,
        weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if loss_weighting not in ("fixed", "uncertainty"):
            raise ValueError(
                f"loss_weighting must be 'fixed' or 'uncertainty', got {loss_weighting!r}"
            )
        if det_weight < 0 or seg_weight < 0 or det_weight + seg_weight == 0:
            raise ValueError(
                "det_weight and seg_weight must be >= 0 and not both 0, got "
                f"{det_weight} and {seg_weight}"
            )
        self.model = self.build_model(
            ssdlite_deeplabv3_mobilenet_v2, weights, weights_backbone,
            {"width_mult": width_mult, "divisible_by": divisible_by, "padding": padding,
             "aspp": aspp, "anchor_layout": anchor_layout},
            num_det_classes=num_det_classes, num_seg_classes=num_seg_classes,
            image_size=image_size, seg_skip=seg_skip, seg_dropout=seg_dropout,
            frozen_stages=frozen_stages, postprocess=option_group(PostprocessOptions, postprocess),
            loss=option_group(MultiBoxLossOptions, loss), class_prior=class_prior,
        )  # fmt: skip
        if segmentation_checkpoint is not None:
            with _naming("segmentation_checkpoint", segmentation_checkpoint):
                self.model.load_segmenter_state_dict(
                    _model_state(segmentation_checkpoint, "deeplabv3_mobilenet_v2"),
                    backbone=detection_checkpoint is None,
                )
        if detection_checkpoint is not None:
            with _naming("detection_checkpoint", detection_checkpoint):
                self.model.load_detector_state_dict(
                    _model_state(detection_checkpoint, "ssdlite_mobilenet_v2")
                )
        self.loss_weighting = loss_weighting
        self.task_weights = (float(det_weight), float(seg_weight))
        # s_i = log sigma_i^2, one per task; only trained with "uncertainty".
        self.log_vars = nn.Parameter(torch.zeros(2), requires_grad=loss_weighting == "uncertainty")
        self.num_det_classes = num_det_classes
        self.num_seg_classes = num_seg_classes
        self.image_size = image_size
        self.ignore_index = ignore_index
        self.eval_backend = eval_backend
        self.channels_last = channels_last
        self.init_coco(num_det_classes)
        self.seg_class_names: list[str] = [str(i) for i in range(num_seg_classes)]
        self.val_seg_metrics = SegmentationMetrics(num_seg_classes, ignore_index)
        self.test_seg_metrics = SegmentationMetrics(num_seg_classes, ignore_index)

    def forward(self, images: Tensor) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        """See ``heads.joint.SSDLiteDeepLabV3.forward``."""
        return self.model(images)

    @classmethod
    def args_from_data(cls, data_args: Mapping[str, Any]) -> dict[str, Any]:
        # The joint data modules that take a class count (COCO layout) mask background and
        # the object classes.
        linked = super().args_from_data(data_args)
        num_classes = data_args.get("num_classes")
        if num_classes is not None:
            linked["num_seg_classes"] = num_classes + 1
        return linked

    # -- set-up ----------------------------------------------------------------------------
    def setup_data(self, data: Any, stage: str) -> None:
        if stage == "predict":
            return  # images only: the checkpoint's classes and categories are used
        super().setup_data(data, stage)
        if not hasattr(data, "ground_truth") or not hasattr(data, "num_seg_classes"):
            raise TypeError(
                f"{type(data).__name__} lacks ground_truth(stage) or num_seg_classes; "
                "MultiTaskTask needs boxes and masks (use COCOJointDataModule, "
                "CityscapesJointDataModule or DemoMultiTaskDataModule)"
            )
        self.setup_coco(data, stage)
        self.seg_class_names = list(data.seg_class_names)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)  # the checks, RNG state and categories
        checkpoint["seg_class_names"] = self.seg_class_names

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.seg_class_names = list(checkpoint.get("seg_class_names", self.seg_class_names))

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = super().parameter_groups()
        # The log-variances are loss weights, not model weights: never decayed.
        groups[0]["params"] = [p for p in groups[0]["params"] if p is not self.log_vars]
        if self.log_vars.requires_grad:
            groups.append({"params": [self.log_vars], "weight_decay": 0.0})
        return groups

    # -- losses ----------------------------------------------------------------------------
    def _masks(self, targets: list[dict[str, Tensor]], size: torch.Size) -> Tensor:
        masks = [t["mask"] for t in targets]
        bad = [tuple(m.shape) for m in masks if tuple(m.shape) != tuple(size)]
        if bad:
            raise ValueError(
                f"training masks must have the images' size {tuple(size)}, got {bad[:3]}"
            )
        return torch.stack(masks)

    def _seg_loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        """Mean pixel cross-entropy over labelled pixels (0, not NaN, when none is)."""
        loss_sum = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="sum")
        return loss_sum / (masks != self.ignore_index).sum().clamp(min=1)

    def combine(self, loss_det: Tensor, loss_seg: Tensor) -> Tensor:
        """The weighted total of the two task losses (see ``loss_weighting``)."""
        w_det, w_seg = self.task_weights
        if self.loss_weighting == "fixed":
            return w_det * loss_det + w_seg * loss_seg
        s = self.log_vars
        return w_det * (torch.exp(-s[0]) * loss_det + s[0]) + w_seg * (
            torch.exp(-s[1]) * loss_seg + s[1]
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, targets = batch
        masks = self._masks(targets, images.shape[-2:])  # before the (costly) forward pass
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        outputs = self.model.forward_outputs(images)
        det = self.model.compute_loss(outputs, targets)
        loss_seg = self._seg_loss(outputs["seg_logits"], masks)
        loss = self.combine(det["loss"], loss_seg)
        size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/loss_det", det["loss"], batch_size=size)
        self.log("train/loss_box", det["loss_box"], batch_size=size)
        self.log("train/loss_cls", det["loss_cls"], batch_size=size)
        self.log("train/loss_seg", loss_seg, batch_size=size)
        if self.loss_weighting == "uncertainty":
            self.log("train/weight_det", torch.exp(-self.log_vars[0]).detach(), batch_size=size)
            self.log("train/weight_seg", torch.exp(-self.log_vars[1]).detach(), batch_size=size)
        return loss

    # -- evaluation ------------------------------------------------------------------------
    def _metrics(self, prefix: str) -> SegmentationMetrics:
        return self.val_seg_metrics if prefix == "val" else self.test_seg_metrics

    def eval_epoch_start(self, prefix: str) -> None:
        super().eval_epoch_start(prefix)
        self._metrics(prefix).reset()

    def eval_step(self, batch: Batch, stage: str, prefix: str) -> None:
        images, targets = batch
        outputs = self.model.forward_outputs(images)
        self.update_coco(outputs, targets, images.shape[-2:], stage, prefix, "loss_det")
        metrics = self._metrics(prefix)
        for logits, target in zip(outputs["seg_logits"], targets, strict=True):
            mask = target["mask"].unsqueeze(0)
            log_probs = F.log_softmax(self._to_size(logits.unsqueeze(0), mask.shape[-2:]), dim=1)
            self.update_segmentation(metrics, log_probs, mask)

    @staticmethod
    def _to_size(logits: Tensor, size: tuple[int, ...] | torch.Size) -> Tensor:
        if tuple(logits.shape[-2:]) == tuple(size):
            return logits
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def eval_epoch_end(self, stage: str, prefix: str) -> None:
        self.log_coco(stage, prefix)
        self.log_segmentation(self._metrics(prefix), prefix, self.seg_class_names, "loss_seg")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Per image in original pixels: ``boxes``, ``scores``, ``labels``, ``mask``
        (``uint8 [H, W]`` label map, CPU), ``path`` and ``orig_size``."""
        images = batch["image"]
        results = self.model(images)  # Lightning runs predict in eval mode
        out = []
        for res, path, orig in zip(results, batch["path"], batch["orig_size"], strict=True):
            size = (int(orig[0]), int(orig[1]))
            logits = self._to_size(res["seg_logits"].unsqueeze(0), size)
            out.append(
                {
                    "boxes": to_original_pixels(res["boxes"], size, images.shape[-2:]),
                    "scores": res["scores"],
                    "labels": res["labels"],
                    "mask": logits.argmax(dim=1)[0].to(torch.uint8).cpu(),
                    "path": path,
                    "orig_size": orig,
                }
            )
        return out
