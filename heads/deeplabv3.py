"""Mobile DeepLabv3 (MobileNetV2 paper, section 6.3 and Table 7) on the shared backbone.

The head sits on ``layer_18``, the 320-channel output of the last inverted residual (the
paper's "MNet V2*" rows), at output stride 16 or 8 through the backbone's dilation. Without
ASPP (the paper's efficient default) it is an image-pooling branch and a 1x1 branch; with
ASPP three 3x3 atrous branches are added. Logits are upsampled bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from backbones.layers import Padding
from backbones.mobilenetv2 import MobileNetV2
from backbones.registry import register_model
from heads.categories import CITYSCAPES_CLASSES, VOC_CLASSES
from heads.outputs import SegmenterOutputs
from heads.pretrained import CORAL_URL, NOT_CHECKED_TAR, TF_DOWNLOAD_URL, TF_RANGE, WeightsEntry
from heads.weights_loader import BACKBONE_ARCHITECTURE, architecture_of
from heads.weights_transfer import load_backbone_weights, load_weights

#: the 320-channel map the paper's "MNet V2*" heads read
DEEPLAB_FEATURE = "layer_18"
#: ASPP atrous rates of the DeepLabv3 paper at output stride 16 (doubled at 8)
ASPP_RATES_OS16 = (6, 12, 18)
# TF DeepLab trains its head with BatchNorm epsilon 1e-5; it is also PyTorch's default and
# the epsilon torchvision's ImageNet weights were trained with, so one value serves both.
HEAD_BN_EPS = 1e-5
HEAD_BN_MOMENTUM = 0.1


class ConvBNReLU(nn.Sequential):
    """``Conv2d (no bias) -> BatchNorm2d -> ReLU`` at indices 0, 1, 2.

    DeepLab's head uses ReLU, not the backbone's ReLU6. Conv and BN are consecutive entries
    so a generic conv-BN folding pass finds them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        bn_eps: float = HEAD_BN_EPS,
        bn_momentum: float = HEAD_BN_MOMENTUM,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation
        super().__init__(
            nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )  # fmt: skip


class ImagePooling(nn.Module):
    """Image-level features: global average pool -> 1x1 conv (BN, ReLU) -> broadcast.

    ``[B, C_in, h, w] -> [B, out_channels, h, w]``. Upsampling a 1x1 map bilinearly is a
    broadcast, so the map is expanded instead (exact, and cheap to export).

    In training the BatchNorm sees one value per image and channel, so it needs a batch of
    at least 2 per process (DeepLab trains with 16; use ``sync_batchnorm`` on GPUs).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        bn_eps: float = HEAD_BN_EPS,
        bn_momentum: float = HEAD_BN_MOMENTUM,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNReLU(in_channels, out_channels, 1, bn_eps=bn_eps, bn_momentum=bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.conv(self.pool(x))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])


def logits_conv(in_channels: int, num_classes: int) -> nn.Conv2d:
    """A 1x1 classifier initialized as TF DeepLab's logits layers: weights from a normal of
    std 0.01 truncated at 2 std, bias 0, so every class starts near an equal score (the
    default init gives a 2-class loss of about 4 on a fresh head, and spikes)."""
    conv = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.trunc_normal_(conv.weight, std=0.01, a=-0.02, b=0.02)
    nn.init.zeros_(conv.bias)
    return conv


class DeepLabV3Head(nn.Module):
    """The Mobile DeepLabv3 head: parallel branches, concatenation, projection, classifier.

    Branches: image pooling, a 1x1 conv and, when ``atrous_rates`` is non-empty, one 3x3
    atrous conv per rate (ASPP, regular convolutions as in the paper's ASPP rows). Each
    branch gives ``channels`` maps (BN, ReLU); they are concatenated and projected by a 1x1
    conv (BN, ReLU), then dropout and a 1x1 classifier with bias.

    Args:
        in_channels: channels of the feature map (320 for ``layer_18`` at width 1.0).
        num_classes: number of output classes.
        channels: width of every branch and of the projection (DeepLab: 256).
        atrous_rates: ASPP rates; ``()`` for the head without ASPP.
        dropout: dropout probability before the classifier (DeepLab: keep 0.9 -> 0.1).

    Shapes: ``[B, in_channels, h, w] -> [B, num_classes, h, w]``.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        channels: int = 256,
        atrous_rates: Sequence[int] = (),
        dropout: float = 0.1,
        bn_eps: float = HEAD_BN_EPS,
        bn_momentum: float = HEAD_BN_MOMENTUM,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.image_pooling = ImagePooling(in_channels, channels, **bn)
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, channels, 1, **bn)]
            + [ConvBNReLU(in_channels, channels, 3, dilation=r, **bn) for r in atrous_rates]
        )
        self.project = ConvBNReLU((len(self.branches) + 1) * channels, channels, 1, **bn)
        self.dropout = nn.Dropout(dropout)
        self.classifier = logits_conv(channels, num_classes)
        self.atrous_rates = tuple(atrous_rates)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        # Image pooling first, as in TF DeepLab's concatenation order.
        features = [self.image_pooling(x)] + [branch(x) for branch in self.branches]
        return self.classifier(self.dropout(self.project(torch.cat(features, dim=1))))


class MobileDeepLabV3(nn.Module):
    """Backbone + ``DeepLabV3Head`` + bilinear upsampling to the input size.

    Args:
        backbone: a ``MobileNetV2`` returning exactly one map (``layer_18`` for the paper's
            model).
        num_classes: number of classes (21 for PASCAL VOC, 19 for Cityscapes).
        atrous_rates: ASPP rates, ``()`` without ASPP.
        dropout, bn_eps, bn_momentum: see ``DeepLabV3Head``.
        align_corners: of the final bilinear upsampling. ``False`` (default) lines up pixel
            centres; ``True`` is what TF DeepLab does (``tf.image.resize_bilinear(...,
            align_corners=True)``), needed to reproduce its released models exactly.

    Forward:
        ``images``: ``[B, 3, H, W]`` normalized to [-1, 1] (any H, W, odd included).
        Returns logits ``[B, num_classes, H, W]``; ``forward_raw`` returns them as
        ``SegmenterOutputs`` (``heads.outputs``).
    """

    kind = "segmenter"
    raw_outputs = SegmenterOutputs

    def __init__(
        self,
        backbone: MobileNetV2,
        num_classes: int,
        atrous_rates: Sequence[int] = (),
        dropout: float = 0.1,
        bn_eps: float = HEAD_BN_EPS,
        bn_momentum: float = HEAD_BN_MOMENTUM,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if len(backbone.out_features) != 1:
            raise ValueError(
                f"DeepLabv3 reads one feature map, got out_features={backbone.out_features}"
            )
        self.backbone = backbone
        self.feature = backbone.out_features[0]
        self.head = DeepLabV3Head(
            backbone.channels()[0], num_classes, 256, atrous_rates, dropout, bn_eps, bn_momentum
        )
        self.num_classes = num_classes
        self.output_stride = backbone.strides()[0]
        self.align_corners = align_corners

    def forward_logits(self, images: Tensor) -> Tensor:
        """Logits at the head's resolution: ``[B, num_classes, ceil(H / os), ceil(W / os)]``."""
        return self.head(self.backbone(images)[self.feature])

    def forward(self, images: Tensor) -> Tensor:
        logits = self.forward_logits(images)
        # Both settings export to ONNX; False lines up pixel centres, True is TF's.
        return F.interpolate(
            logits, size=images.shape[-2:], mode="bilinear", align_corners=self.align_corners
        )

    def forward_raw(self, images: Tensor) -> SegmenterOutputs:
        """``[B, 3, H, W]`` -> ``logits [B, num_classes, H, W]``."""
        return SegmenterOutputs(self(images))

    def graph_constants(self, image_size: Sequence[int]) -> dict[str, Tensor]:
        return {}

    def postprocess_raw(self, raw: SegmenterOutputs, image_size: Sequence[int]) -> Tensor:
        """The logits (what ``forward`` returns)."""
        return raw.logits


#: state-dict prefixes of the class-dependent layers (re-initialized when fine-tuning)
CLASS_PREDICTORS = ("head.classifier.",)
_DEEPLAB_ZOO = "TF DeepLab model zoo (tensorflow/models research/deeplab/g3doc/model_zoo.md)"
_VOC_ARCH = {"width_mult": 1.0, "divisible_by": 8, "padding": "tf", "align_corners": True}
WEIGHTS = (
    WeightsEntry(
        "deeplabv3_mobilenet_v2", "voc_tf",
        TF_DOWNLOAD_URL + "deeplabv3_mnv2_pascal_train_aug_2018_01_29.tar.gz", None, "tf_tar",
        21, _VOC_ARCH, (513, 513), **TF_RANGE, categories=lambda: VOC_CLASSES,
        metric="VOC 2012 val mIoU 75.32 (OS16, single scale)", metric_source=_DEEPLAB_ZOO,
        checked=NOT_CHECKED_TAR, member="frozen_inference_graph.pb",
    ),
    WeightsEntry(
        "deeplabv3_mobilenet_v2", "voc_tf_8bit",
        CORAL_URL + "deeplabv3_mnv2_pascal_quant.tflite",
        "350af47fd346ea6d74b58833a351f583ba860e9806ec5bd292ff8d8f1f249398", "tflite",
        21, _VOC_ARCH, (513, 513), **TF_RANGE, categories=lambda: VOC_CLASSES,
        metric="VOC 2012 val mIoU 74.26 (8-bit; float parent 75.32)", metric_source=_DEEPLAB_ZOO,
        checked="tests/tasks/test_tf_import.py: dequantized into the float model, per-pixel "
        "argmax agreement with the 8-bit TFLite runtime >= 97% on every test photo",
    ),
    WeightsEntry(
        "deeplabv3_mobilenet_v2", "voc_tf_w050_257",
        "https://storage.googleapis.com/download.tensorflow.org/models/tflite/gpu/"
        "deeplabv3_257_mv_gpu.tflite",
        "68a539782c2c6a72f8aac3724600124a85ed977162b44e84cbae5db717c933c6", "tflite",
        21, {"width_mult": 0.5, "divisible_by": 1, "padding": "tf", "align_corners": True},
        (257, 257), **TF_RANGE, categories=lambda: VOC_CLASSES,
        metric="none published for this export (DeepLab zoo: mobilenetv2_dm05 VOC 70.19)",
        metric_source="TensorFlow Lite segmentation example model",
        checked="tests/tasks/test_tf_import.py: logits equal the float TFLite runtime's "
        "within 1e-3, per-pixel argmax agreement >= 99.9% on every test photo",
        extra={"output_stride": 8},
    ),
    WeightsEntry(
        "deeplabv3_mobilenet_v2", "cityscapes_tf",
        TF_DOWNLOAD_URL + "deeplabv3_mnv2_cityscapes_train_2018_02_05.tar.gz", None, "tf_tar",
        19, _VOC_ARCH, (769, 769), **TF_RANGE, categories=lambda: CITYSCAPES_CLASSES,
        metric="Cityscapes val mIoU 70.71 (OS16, single scale)", metric_source=_DEEPLAB_ZOO,
        checked=NOT_CHECKED_TAR, member="frozen_inference_graph.pb",
    ),
)  # fmt: skip


@register_model(
    kind="segmenter",
    default_size=513,
    weights=WEIGHTS,
    class_predictors=CLASS_PREDICTORS,
    architecture=("num_classes", *BACKBONE_ARCHITECTURE, "output_stride", "align_corners", "aspp"),
)
def deeplabv3_mobilenet_v2(
    num_classes: int | None = None,
    output_stride: int | None = None,
    aspp: bool = False,
    width_mult: float = 1.0,
    weights_backbone: str | Path | None = None,
    dropout: float = 0.1,
    frozen_stages: int = 0,
    freeze_bn: bool = False,
    bn_eps: float = HEAD_BN_EPS,
    bn_momentum: float = HEAD_BN_MOMENTUM,
    divisible_by: int = 8,
    padding: Padding = "torch",
    align_corners: bool = False,
    weights: str | Path | None = None,
) -> MobileDeepLabV3:
    """Mobile DeepLabv3 on MobileNetV2 ``layer_18`` (paper Table 7, "MNet V2*").

    With 21 classes the model has exactly 2,113,557 parameters without ASPP and 4,523,541
    with it (the paper's 2.11M and 4.52M); the backbone stops at ``layer_18``, the
    1280-channel ``layer_19`` is not built.

    Args:
        num_classes: number of classes (``None``: the weights', else 21).
        output_stride: 16 or 8 (8 costs about 4x the multiply-adds; the paper uses it with
            multi-scale evaluation). 32 is accepted for experiments. ``None``: the one
            ``weights`` were converted or trained at, else 16 (the weights run at any).
        aspp: add the three 3x3 atrous branches (rates 6, 12, 18 at OS16; 12, 24, 36 at OS8).
        width_mult: backbone width multiplier.
        weights_backbone: weights whose backbone starts this one: any of
            ``heads.weights_loader`` (an ImageNet name: ``"imagenet"``, ``"imagenet_v2"``,
            ``"imagenet_tf"``, ``"imagenet_tf_8bit"``; a ``mobilezoo convert`` file; a task
            checkpoint of any task; a torchvision state dict). They set ``width_mult``,
            ``divisible_by`` and ``padding`` (an explicit other value is refused).
        dropout: dropout before the classifier (DeepLab keep probability 0.9 -> 0.1).
        frozen_stages, freeze_bn: see ``backbones.MobileNetV2``.
        bn_eps: BatchNorm epsilon of backbone and head (1e-5: TF DeepLab's head value and
            the value torchvision's ImageNet weights were trained with).
        bn_momentum: BatchNorm momentum (PyTorch convention). TF DeepLab's decay 0.9997
            would be 0.0003; 0.1 adapts the running statistics within short runs too.
        divisible_by, padding: backbone channel rounding and convolution padding (see
            ``backbones.MobileNetV2``); TF's width-0.5 DeepLab needs ``divisible_by=1``.
        align_corners: of the final upsampling (see ``MobileDeepLabV3``).
        weights: trained weights of the whole model: a name from
            ``heads.pretrained.list_weights("deeplabv3_mobilenet_v2")`` (e.g. ``"voc_tf"``)
            or a file written by ``mobilezoo convert`` / ``torch.save(model.state_dict())``
            or a task checkpoint. They set ``width_mult``, ``divisible_by``, ``padding``,
            ``align_corners``, ``aspp`` (and, unless given, ``num_classes`` and
            ``output_stride``) to the values their model was built with. With a different
            ``num_classes`` everything but the classifier is loaded (fine-tuning). Weights
            of another model (a classifier, a detector) give the backbone only, with one
            log line saying what was skipped.

    Returns:
        ``MobileDeepLabV3``: ``[B, 3, H, W]`` -> logits ``[B, num_classes, H, W]``.
    """
    arch = architecture_of(
        "deeplabv3_mobilenet_v2",
        weights,
        weights_backbone,
        num_classes=num_classes,
        output_stride=output_stride,
        width_mult=width_mult,
        divisible_by=divisible_by,
        padding=padding,
        align_corners=align_corners,
        aspp=aspp,
    )
    width_mult, divisible_by, padding = arch["width_mult"], arch["divisible_by"], arch["padding"]
    align_corners, aspp = arch["align_corners"], arch["aspp"]
    num_classes = 21 if arch["num_classes"] is None else arch["num_classes"]
    output_stride = 16 if arch["output_stride"] is None else arch["output_stride"]
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    backbone = MobileNetV2(
        width_mult=width_mult,
        output_stride=output_stride,
        out_features=[DEEPLAB_FEATURE],
        frozen_stages=frozen_stages,
        freeze_bn=freeze_bn,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
        divisible_by=divisible_by,
        padding=padding,
    )
    if weights_backbone is not None:
        load_backbone_weights(backbone, weights_backbone, "deeplabv3_mobilenet_v2")
    rates: tuple[int, ...] = ()
    if aspp:
        rates = tuple(r * 16 // output_stride for r in ASPP_RATES_OS16)
    model = MobileDeepLabV3(
        backbone, num_classes, rates, dropout, bn_eps, bn_momentum, align_corners=align_corners
    )
    if weights is not None:
        load_weights(model, "deeplabv3_mobilenet_v2", weights)
    return model


@torch.no_grad()
def predict_padded(
    model: nn.Module, images: Tensor, size: int | Sequence[int], pad_value: float = 0.0
) -> Tensor:
    """TF DeepLab's evaluation protocol: pad the image at the bottom and right to the crop
    size (with the mean pixel: 0 for inputs in [-1, 1]), run the model, crop the logits.

    TF evaluates VOC at 513x513 and Cityscapes at 1025x2049 this way; running the model on
    the unpadded image gives slightly different maps (image pooling and the stride grid
    see other pixels), so a converted model reproduces TF's numbers only with this.

    Args:
        model: returns logits ``[B, C, h, w]`` at its input size.
        images: ``[B, 3, H, W]`` normalized images with ``H, W <= size``.
        size: crop size ``S`` or ``(S_h, S_w)``.
        pad_value: value of the padded pixels after normalization.

    Returns:
        logits ``[B, C, H, W]``.
    """
    target_h, target_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    height, width = images.shape[-2:]
    if height > target_h or width > target_w:
        raise ValueError(
            f"image {height}x{width} is larger than the crop size {target_h}x{target_w}"
        )
    padded = F.pad(images, (0, target_w - width, 0, target_h - height), value=pad_value)
    return model(padded)[..., :height, :width]


@torch.no_grad()
def multiscale_flip_predict(
    model: nn.Module,
    images: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    align_corners: bool | None = None,
) -> Tensor:
    """Class probabilities averaged over input scales and left-right flips (the paper's
    "MF" evaluation, as TF DeepLab does it: softmax at the input size, then the mean).

    Args:
        model: returns logits ``[B, C, h, w]`` at its input size ``h, w``.
        images: ``[B, 3, H, W]`` normalized images.
        scales: input scale factors, e.g. ``(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)``.
        flip: also run every scale on the left-right flipped image.
        align_corners: of the bilinear resizing of images and logits; ``None`` takes the
            model's ``align_corners`` attribute (``True`` for TF-converted DeepLab models,
            as TF DeepLab resizes), else ``False``.

    Returns:
        probabilities ``[B, C, H, W]`` (softmax, averaged over ``len(scales) * (1 + flip)``
        passes).
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be a non-empty list of positive numbers, got {scales}")
    if align_corners is None:
        align_corners = bool(getattr(model, "align_corners", False))
    height, width = images.shape[-2:]
    total: Tensor | None = None
    passes = 0
    for scale in scales:
        if scale == 1.0:
            scaled = images
        else:
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=align_corners)
        for flipped in (False, True) if flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            logits = model(x)
            if flipped:
                logits = logits.flip(-1)
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=align_corners
            )
            probs = logits.softmax(dim=1)
            total = probs if total is None else total + probs
            passes += 1
    assert total is not None
    return total / passes
