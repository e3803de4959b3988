"""One backbone pass, two answers: SSDLite boxes and a Mobile DeepLabv3 mask.

The backbone runs once at output stride 32, exactly as SSDLite needs it (``layer_15``
expansion at stride 16, ``layer_19`` at 32), so the detection half is the paper's SSDLite
unchanged: its state dict (also one imported from TF) loads into this model as is.

The segmentation half reads the same pass: the paper's ``DeepLabV3Head`` on ``layer_18``
(320 channels, here at stride 32 instead of DeepLab's dilated 16) plus a light decoder in
the style of LR-ASPP: a 1x1 classifier on a stride-8 map (``layer_7``, 32 channels) whose
logits are added to the head's logits upsampled to that map. The head sees the whole
image context; the skip restores the boundaries that stride 32 alone blurs. Running the
backbone at stride 16 instead would move SSDLite off its stride-32 tap (or compute
``layer_15``..``layer_18`` a second time, dilated); ``benchmarks/multitask.py`` compares
these choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn
from torch.nn import functional as F

from backbones.layers import Padding
from backbones.mobilenetv2 import MobileNetV2
from backbones.registry import register_model
from heads.anchors import AnchorLayout
from heads.deeplabv3 import ASPP_RATES_OS16, DEEPLAB_FEATURE, DeepLabV3Head, logits_conv
from heads.detection_loss import MultiBoxLossOptions
from heads.outputs import JointOutputs
from heads.postprocess import PostprocessOptions, SSDPostprocessor
from heads.ssdlite import SSD_BN, SSDLITE_FEATURES, SSDLite
from heads.weights_loader import BACKBONE_ARCHITECTURE, architecture_of
from heads.weights_transfer import load_backbone_weights, load_weights

#: the stride-8 map of the segmentation decoder (last block of the 32-channel stage)
SEG_SKIP_FEATURE = "layer_7"
SEG_SKIPS = ("layer_4", "layer_7", "layer_14")
#: state-dict prefixes of the class-dependent layers (re-initialized when fine-tuning)
CLASS_PREDICTORS = ("head.cls_predictors.", "seg_head.classifier.", "seg_skip.")


class SSDLiteDeepLabV3(nn.Module):
    """SSDLite and a Mobile DeepLabv3 head on one MobileNetV2 pass, by composition.

    ``detector`` is a whole ``SSDLite`` (usable alone: ``model.detector(images)``); the
    segmentation half (``seg_head``, ``seg_skip``) reads the same backbone pass. The
    detector's modules (``backbone``, ``extras``, ``anchor_generator``, ``head``, ``loss``)
    are registered here under their SSDLite names and ``detector`` itself is kept out of the
    module tree, so the state dict is an SSDLite's plus the ``seg_*`` keys, key for key
    (checkpoints and converted files of either model load; ``load_detector_state_dict``).
    ``postprocessor`` is the detector's.

    Args:
        detector: an ``SSDLite`` whose backbone runs at stride 32 and also returns
            ``seg_feature`` and, when set, ``seg_skip``.
        num_seg_classes: segmentation classes (including background).
        seg_feature: the map the DeepLab head reads (``layer_18``).
        seg_skip: the decoder's high-resolution map, or ``None`` for the head alone.
        atrous_rates: ASPP rates of the DeepLab head; ``()`` (the paper's efficient head).
        seg_dropout: dropout before the DeepLab classifier.

    Forward (``images`` ``[B, 3, H, W]`` normalized to [-1, 1]):
        - eval: a list of ``B`` dicts: SSDLite's ``boxes`` ``[D, 4]``, ``scores`` ``[D]``,
          ``labels`` ``[D]`` and ``seg_logits`` ``[S, H, W]`` (input resolution).
        - train: SSDLite's ``cls_logits``, ``box_deltas``, ``anchors`` plus ``seg_logits``
          ``[B, S, H, W]``: pass it to ``compute_loss`` (boxes) and a pixel loss.

    ``forward_raw`` returns ``JointOutputs(cls_logits, box_deltas, seg_logits)``
    (``heads.outputs``) for export.
    """

    kind = "joint"
    raw_outputs = JointOutputs
    detector: SSDLite

    def __init__(
        self,
        detector: SSDLite,
        num_seg_classes: int,
        seg_feature: str = DEEPLAB_FEATURE,
        seg_skip: str | None = SEG_SKIP_FEATURE,
        atrous_rates: Sequence[int] = (),
        seg_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if num_seg_classes < 2:
            raise ValueError(
                f"num_seg_classes must be >= 2 (background + 1), got {num_seg_classes}"
            )
        backbone = detector.backbone
        missing = [n for n in (seg_feature, seg_skip) if n and n not in backbone.out_features]
        if missing:
            raise ValueError(
                f"the backbone does not return {missing}; its out_features are "
                f"{list(backbone.out_features)}"
            )
        stride = backbone.strides([detector.taps[-1]])[0]
        if stride != 32:
            raise ValueError(
                "SSDLite's last tap must be at stride 32 (build the backbone with "
                f"output_stride=32), got {stride}"
            )
        for name, module in detector.named_children():
            self.add_module(name, module)
        # Not a child: its modules are registered above under their own names.
        object.__setattr__(self, "detector", detector)
        self.seg_feature = seg_feature
        self.seg_skip_feature = seg_skip
        self.seg_head = DeepLabV3Head(
            backbone.channels([seg_feature])[0], num_seg_classes, 256, atrous_rates, seg_dropout
        )
        self.seg_skip = (
            logits_conv(backbone.channels([seg_skip])[0], num_seg_classes) if seg_skip else None
        )
        self.num_seg_classes = num_seg_classes

    @property
    def num_det_classes(self) -> int:
        return self.detector.num_classes

    @property
    def postprocessor(self) -> SSDPostprocessor:
        """The detector's post-processing (score threshold, NMS, caps)."""
        return self.detector.postprocessor

    @property
    def image_size(self) -> int:
        """The square input size the model is meant for (the detector's)."""
        return self.detector.image_size

    def train(self, mode: bool = True) -> SSDLiteDeepLabV3:
        super().train(mode)
        self.detector.training = mode  # not a child, so set here: its modules already are
        return self

    def feature_info(self) -> dict[str, list[tuple[str, int, int]]]:
        """What each half reads: ``{"detection": [(name, channels, stride)], "segmentation":
        [...]}`` (the four extra layers of SSDLite follow the last detection map)."""
        seg = [self.seg_feature] + ([self.seg_skip_feature] if self.seg_skip_feature else [])

        def info(names: Sequence[str]) -> list[tuple[str, int, int]]:
            b = self.backbone
            return list(zip(names, b.channels(names), b.strides(names), strict=True))

        return {"detection": info(self.detector.taps), "segmentation": info(seg)}

    # -- the two halves on one pass ---------------------------------------------------------
    def _segment(self, taps: dict[str, Tensor], size: Sequence[int]) -> Tensor:
        logits = self.seg_head(taps[self.seg_feature])
        if self.seg_skip is not None:
            skip = taps[self.seg_skip_feature]
            logits = F.interpolate(
                logits, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            logits = logits + self.seg_skip(skip)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def _both(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        """The six SSDLite maps and the segmentation logits ``[B, S, H, W]``, one pass."""
        taps = self.backbone(images)
        return self.detector.maps_from_taps(taps), self._segment(taps, images.shape[-2:])

    def forward_raw(self, images: Tensor) -> JointOutputs:
        """``[B, 3, H, W]`` -> ``cls_logits`` ``[B, A, C + 1]``, ``box_deltas`` ``[B, A, 4]``,
        ``seg_logits`` ``[B, S, H, W]``."""
        maps, seg_logits = self._both(images)
        cls_logits, box_deltas = self.head(maps)
        return JointOutputs(cls_logits, box_deltas, seg_logits)

    def forward_outputs(self, images: Tensor) -> dict[str, Tensor]:
        """SSDLite's raw outputs and anchors plus ``seg_logits`` ``[B, S, H, W]``."""
        maps, seg_logits = self._both(images)
        cls_logits, box_deltas = self.head(maps)
        anchors = self.anchors_for(tuple(images.shape[-2:]), [m.shape[-2:] for m in maps])
        return {
            "cls_logits": cls_logits,
            "box_deltas": box_deltas,
            "anchors": anchors,
            "seg_logits": seg_logits,
        }

    def forward(self, images: Tensor) -> list[dict[str, Tensor]] | dict[str, Tensor]:
        outputs = self.forward_outputs(images)
        if self.training:
            return outputs
        detections = self.postprocessor(
            outputs["cls_logits"], outputs["box_deltas"], outputs["anchors"], images.shape[-2:]
        )
        return _with_masks(detections, outputs["seg_logits"])

    # -- the detector's own steps ----------------------------------------------------------
    def anchors_for(
        self, image_size: Sequence[int], feature_sizes: Sequence[Sequence[int]]
    ) -> Tensor:
        """See ``SSDLite.anchors_for``."""
        return self.detector.anchors_for(image_size, feature_sizes)

    def feature_sizes(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        """See ``SSDLite.feature_sizes``."""
        return self.detector.feature_sizes(image_size)

    def graph_constants(self, image_size: Sequence[int]) -> dict[str, Tensor]:
        """The detector's ``{"anchors": [A, 4]}`` of inputs of ``image_size = (H, W)``."""
        return self.detector.graph_constants(image_size)

    def compute_loss(
        self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """The detector's multibox loss (see ``SSDLite.compute_loss``)."""
        return self.detector.compute_loss(outputs, targets)

    def postprocess(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        image_size: Sequence[int],
        seg_logits: Tensor | None = None,
    ) -> list[dict[str, Tensor]]:
        """``SSDLite.postprocess`` of the detection outputs; with ``seg_logits`` each image's
        dict also holds its ``seg_logits`` ``[S, H, W]`` (what eval ``forward`` gives)."""
        detections = self.detector.postprocess(cls_logits, box_deltas, image_size)
        return detections if seg_logits is None else _with_masks(detections, seg_logits)

    def postprocess_raw(
        self, raw: JointOutputs, image_size: Sequence[int]
    ) -> list[dict[str, Tensor]]:
        """``postprocess`` of ``forward_raw``'s outputs, masks included."""
        return self.postprocess(raw.cls_logits, raw.box_deltas, image_size, raw.seg_logits)

    # -- starting from single-task weights -------------------------------------------------
    def load_detector_state_dict(self, state: dict[str, Tensor]) -> list[str]:
        """Load an ``SSDLite`` state dict into ``detector`` (strict on its keys).

        Returns:
            the keys of this model left as they were (the segmentation half).
        """
        result = self.detector.load_state_dict(state, strict=False)
        if result.unexpected_keys or result.missing_keys:
            raise ValueError(
                "not an SSDLite state dict of this shape: unexpected "
                f"{result.unexpected_keys[:5]}, missing {result.missing_keys[:5]}"
            )
        return [k for k in self.state_dict() if k.startswith("seg_")]

    def load_segmenter_state_dict(self, state: dict[str, Tensor], backbone: bool = True) -> None:
        """Load a ``MobileDeepLabV3`` state dict: its ``head.*`` into ``seg_head`` and, when
        ``backbone``, its ``backbone.*`` (the weights do not depend on the output stride).
        The backbone stops at ``layer_18`` there, so ``layer_19`` keeps its weights."""
        head = {k[len("head.") :]: v for k, v in state.items() if k.startswith("head.")}
        if not head:
            raise ValueError("no 'head.*' keys: expected a MobileDeepLabV3 state dict")
        self.seg_head.load_state_dict(head)
        if backbone:
            feats = {
                k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")
            }
            result = self.backbone.load_state_dict(feats, strict=False)
            if result.unexpected_keys:
                raise ValueError(f"unexpected backbone keys {result.unexpected_keys[:5]}")


@register_model(
    kind="joint",
    default_size=320,
    class_predictors=CLASS_PREDICTORS,
    architecture=(
        "num_det_classes", "num_seg_classes", *BACKBONE_ARCHITECTURE, "anchor_layout",
        "seg_skip", "aspp", "image_size",
    ),
)  # fmt: skip
def ssdlite_deeplabv3_mobilenet_v2(
    num_det_classes: int | None = None,
    num_seg_classes: int | None = None,
    width_mult: float = 1.0,
    image_size: int = 320,
    seg_skip: str | None = SEG_SKIP_FEATURE,
    aspp: bool = False,
    seg_dropout: float = 0.1,
    weights_backbone: str | Path | None = None,
    anchor_layout: AnchorLayout = "tf",
    frozen_stages: int = 0,
    postprocess: PostprocessOptions = PostprocessOptions(),
    loss: MultiBoxLossOptions = MultiBoxLossOptions(),
    divisible_by: int = 8,
    padding: Padding = "torch",
    class_prior: float | None = None,
    weights: str | Path | None = None,
) -> SSDLiteDeepLabV3:
    """SSDLite + Mobile DeepLabv3 on one MobileNetV2 (stride 32) pass.

    Args:
        num_det_classes: object classes without background (``None``: the weights', else
            80 as COCO).
        num_seg_classes: mask classes with background (``None``: the weights', else 81 as
            COCO things; Cityscapes: 19).
        width_mult: backbone width multiplier.
        image_size: the square input size the model is meant for (anchors follow the input).
        seg_skip: stride-8/4/16 map added to the DeepLab logits (``"layer_7"``, ``"layer_4"``,
            ``"layer_14"``) or ``None`` for the DeepLab head alone at stride 32.
        aspp: add DeepLab's three 3x3 atrous branches (rates 6, 12, 18 halved for stride 32).
        seg_dropout: dropout before the DeepLab classifier.
        weights_backbone, anchor_layout, frozen_stages, postprocess, loss, divisible_by,
            padding, class_prior: see ``ssdlite_mobilenet_v2``.
        weights: trained weights: of this model (a ``MultiTaskTask`` checkpoint, a state
            dict), or of another (``heads.weights_loader``): an SSDLite file or checkpoint
            gives the whole detector half, any other (a DeepLab, a classifier) the
            backbone; one log line says what was skipped.

    At 320x320 with 80 + 81 classes: 4,656,951 parameters (SSDLite's 4,337,013 plus
    319,938) and 0.816 G multiply-adds (SSDLite: 0.789 G; SSDLite and an output-stride-16
    DeepLab run one after the other: 1.812 G).
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if seg_skip is not None and seg_skip not in SEG_SKIPS:
        raise ValueError(f"seg_skip must be one of {SEG_SKIPS} or None, got {seg_skip!r}")
    arch = architecture_of(
        "ssdlite_deeplabv3_mobilenet_v2",
        weights,
        weights_backbone,
        num_det_classes=num_det_classes,
        num_seg_classes=num_seg_classes,
        width_mult=width_mult,
        divisible_by=divisible_by,
        padding=padding,
        anchor_layout=anchor_layout,
        seg_skip=seg_skip,
        aspp=aspp,
    )
    width_mult, divisible_by, padding = arch["width_mult"], arch["divisible_by"], arch["padding"]
    anchor_layout, seg_skip, aspp = arch["anchor_layout"], arch["seg_skip"], arch["aspp"]
    out = [*SSDLITE_FEATURES, DEEPLAB_FEATURE] + ([seg_skip] if seg_skip else [])
    backbone = MobileNetV2(
        width_mult=width_mult,
        out_features=out,
        frozen_stages=frozen_stages,
        divisible_by=divisible_by,
        padding=padding,
        **SSD_BN,
    )
    if weights_backbone is not None:
        load_backbone_weights(backbone, weights_backbone, "ssdlite_deeplabv3_mobilenet_v2")
    # DeepLab's rates are for stride 16; at stride 32 the same field of view is half.
    rates = tuple(max(1, r // 2) for r in ASPP_RATES_OS16) if aspp else ()
    detector = SSDLite(
        backbone,
        80 if arch["num_det_classes"] is None else arch["num_det_classes"],
        anchor_layout=anchor_layout,
        loss=loss,
        postprocess=postprocess,
        image_size=image_size,
        padding=padding,
        class_prior=class_prior,
    )
    model = SSDLiteDeepLabV3(
        detector,
        81 if arch["num_seg_classes"] is None else arch["num_seg_classes"],
        seg_skip=seg_skip,
        atrous_rates=rates,
        seg_dropout=seg_dropout,
    )
    if weights is not None:
        load_weights(model, "ssdlite_deeplabv3_mobilenet_v2", weights)
    return model


def _with_masks(detections: list[dict[str, Tensor]], seg_logits: Tensor) -> list[dict[str, Tensor]]:
    return [{**det, "seg_logits": seg} for det, seg in zip(detections, seg_logits, strict=True)]
