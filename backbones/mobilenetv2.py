"""MobileNetV2 (arXiv 1801.04381, Table 2) as a multi-scale feature extractor.

Layers are numbered as in the TF reference code: ``layer_1`` is the first 3x3 conv,
``layer_2`` .. ``layer_18`` are the 17 inverted residual blocks and ``layer_19`` is the 1x1
conv to 1280 channels. ``layer_N`` is ``self.features[N - 1]``, exactly torchvision's
``mobilenet_v2().features``, so torchvision state dicts load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from backbones.layers import (
    BN_EPS,
    BN_MOMENTUM,
    ConvBNReLU6,
    InvertedResidual,
    Padding,
    check_padding,
    make_divisible,
)
from backbones.registry import register_model
from backbones.weights import load_torchvision_state_dict

# Paper Table 2: expansion t, output channels c, repeats n, stride of the first repeat s.
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280
EXPANSION_SUFFIX = "_expansion"
# The last layer of each resolution: the "stage ends" at strides 2, 4, 8, 16 and 32.
STAGE_ENDS = ("layer_2", "layer_4", "layer_7", "layer_14", "layer_19")
VALID_OUTPUT_STRIDES = (8, 16, 32)
# TF-slim's min_depth: no block narrower than 8 channels, whatever the rounding.
MIN_CHANNELS = 8


@dataclass(frozen=True)
class FeatureInfo:
    """One feature map the backbone can return.

    Attributes:
        name: key in the forward output, e.g. ``"layer_15_expansion"``.
        channels: number of channels C.
        stride: input size divided by the map size (at the configured output stride).
        index: 1-based TF layer number it comes from.
    """

    name: str
    channels: int
    stride: int
    index: int


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor returning a dict of named maps.

    Args:
        width_mult: width multiplier (> 0); channels are rounded with ``make_divisible``.
            The last 1280-channel conv is only scaled for ``width_mult > 1``.
        output_stride: 8, 16 or 32. Below 32, strided layers past the target stride run
            with stride 1 and their depthwise convs are dilated (TF ``mobilenet_base``
            rule: the layer whose stride is removed keeps the current rate, later layers
            use the rate multiplied by every removed stride).
        out_features: names to return (see ``feature_info``); default ``STAGE_ENDS``.
            Layers after the deepest requested one are not built.
        frozen_stages: freeze the first N stages (parameters and BN statistics). Stage 1 is
            ``layer_1`` (the stem), stages 2-8 are the seven rows of Table 2, stage 9 is
            ``layer_19``. 0 freezes nothing.
        freeze_bn: keep every BatchNorm in eval mode (running statistics frozen) during
            training, as is usual when fine-tuning with small batches.
        weights: ``None``; ``"imagenet"`` / ``"imagenet_v2"`` (torchvision's IMAGENET1K_V1 /
            V2, width 1.0 only); or a path to a state dict saved from torchvision's
            ``mobilenet_v2`` (``features.*`` keys, extra keys ignored).
        bn_eps: BatchNorm epsilon (TF uses 1e-3).
        bn_momentum: BatchNorm momentum (PyTorch convention; TF decay 0.9997 = 0.0003).
        divisible_by: channel rounding of ``width_mult`` (TF-slim's ``divisible_by``): 8
            (torchvision and TF-slim's classifiers) or 1 (no rounding, e.g. TF DeepLab's
            width-0.5 models keep 12 and 72 channels where 8 gives 16 and 96). The
            expansion widths are rounded to 8 either way, as in TF-slim. Identical at
            width 1.0.
        padding: ``"torch"`` (symmetric, default) or ``"tf"`` (TF "SAME": stride-2 convs
            pad 0 before and 1 after on even sizes), needed to reproduce TF-trained
            weights at even input sizes (224, 300, 320). Parameters and MAdds are equal.
        min_channels: fewest output channels of a width-scaled layer (TF-slim's
            ``min_depth``): 8 (TF-slim, torchvision); the Object Detection API's SSD
            feature extractors use 16, which widens the early layers below width 0.75.
        scale_last_conv: ``layer_19`` scales with ``width_mult`` below 1 as well (TF-slim's
            ``mobilenet_base`` without ``finegrain_classification_mode``, as the Object
            Detection API's SSD feature extractors build it). Off: it keeps 1280 channels
            below width 1, as the published classifiers. Both are equal at width >= 1.

    Forward:
        ``x``: ``[B, 3, H, W]`` normalized image. Returns ``{name: [B, C, H / s, W / s]}``
        (sizes rounded up for odd inputs) for every name in ``out_features``.
    """

    kind = "backbone"

    def __init__(
        self,
        width_mult: float = 1.0,
        output_stride: int = 32,
        out_features: Sequence[str] | None = None,
        frozen_stages: int = 0,
        freeze_bn: bool = False,
        weights: str | Path | None = None,
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
        divisible_by: int = 8,
        padding: Padding = "torch",
        min_channels: int = MIN_CHANNELS,
        scale_last_conv: bool = False,
    ) -> None:
        super().__init__()
        if min_channels < 1:
            raise ValueError(f"min_channels must be a positive integer, got {min_channels}")
        if divisible_by < 1:
            raise ValueError(f"divisible_by must be a positive integer, got {divisible_by}")
        check_padding(padding)
        if not width_mult > 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult}")
        if output_stride not in VALID_OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        self.width_mult = width_mult
        self.output_stride = output_stride
        self.freeze_bn = freeze_bn
        self.divisible_by = divisible_by
        self.padding = padding

        self.min_channels = min_channels
        self.scale_last_conv = scale_last_conv
        layers, self.feature_info = _build_layers(
            width_mult, output_stride, bn_eps, bn_momentum, divisible_by, padding,
            min_channels, scale_last_conv,
        )  # fmt: skip
        names = [info.name for info in self.feature_info]
        self.out_features = tuple(STAGE_ENDS if out_features is None else out_features)
        unknown = [n for n in self.out_features if n not in names]
        if unknown or not self.out_features:
            raise ValueError(f"out_features must be a non-empty subset of {names}, got {unknown}")
        self._info = {info.name: info for info in self.feature_info}
        depth = max(self._info[n].index for n in self.out_features)
        self.features = nn.Sequential(*layers[:depth])
        _init_weights(self)

        num_stages = len(INVERTED_RESIDUAL_SETTING) + 2
        if not 0 <= frozen_stages <= num_stages:
            raise ValueError(f"frozen_stages must be in 0..{num_stages}, got {frozen_stages}")
        self.frozen_stages = frozen_stages
        if weights is not None:
            self.load_torchvision_weights(weights)
        self._freeze()

    # -- introspection -------------------------------------------------------------------
    def channels(self, names: Sequence[str] | None = None) -> list[int]:
        """Channels of ``names`` (default: ``out_features``), in order."""
        return [self._info[n].channels for n in (names or self.out_features)]

    def strides(self, names: Sequence[str] | None = None) -> list[int]:
        """Strides of ``names`` (default: ``out_features``), in order."""
        return [self._info[n].stride for n in (names or self.out_features)]

    # -- weights and freezing ------------------------------------------------------------
    def load_torchvision_weights(self, weights: str | Path) -> None:
        """Load torchvision ``mobilenet_v2`` weights (name or file) into ``features``."""
        state = load_torchvision_state_dict(weights, self.width_mult)
        self.load_features_state(state, source=str(weights))

    def load_features_state(self, state: dict[str, Tensor], source: str = "state dict") -> None:
        """Load the ``features.*`` tensors of a torchvision-style state dict (others ignored)."""
        own = self.state_dict()
        selected = {k: v for k, v in state.items() if k in own}
        missing = [k for k in own if k not in selected]
        if missing:
            raise ValueError(
                f"{source} lacks {len(missing)} backbone tensors, e.g. {missing[:3]};"
                " expected a state dict of torchvision's mobilenet_v2 (keys 'features.N...')"
            )
        self.load_state_dict(selected)

    def _stage_of_layer(self, index: int) -> int:
        """1-based stage number of TF layer ``index`` (see ``frozen_stages``)."""
        if index == 1:
            return 1
        first = 2
        for stage, (_, _, repeats, _) in enumerate(INVERTED_RESIDUAL_SETTING, start=2):
            if index < first + repeats:
                return stage
            first += repeats
        return len(INVERTED_RESIDUAL_SETTING) + 2

    def _frozen_layers(self) -> list[nn.Module]:
        return [
            layer
            for i, layer in enumerate(self.features, start=1)
            if self._stage_of_layer(i) <= self.frozen_stages
        ]

    def _freeze(self) -> None:
        for layer in self._frozen_layers():
            for p in layer.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> MobileNetV2:
        """Switch mode, keeping frozen stages (and all BN if ``freeze_bn``) in eval mode."""
        super().train(mode)
        if mode:
            for layer in self._frozen_layers():
                layer.eval()
            if self.freeze_bn:
                for m in self.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
        return self

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: Tensor) -> dict[str, Tensor]:
        wanted = set(self.out_features)
        out: dict[str, Tensor] = {}
        for i, layer in enumerate(self.features, start=1):
            name = f"layer_{i}"
            if name + EXPANSION_SUFFIX in wanted:
                x, expansion = layer.forward_with_expansion(x)
                out[name + EXPANSION_SUFFIX] = expansion
            else:
                x = layer(x)
            if name in wanted:
                out[name] = x
        return {n: out[n] for n in self.out_features}


def _init_weights(module: nn.Module) -> None:
    """torchvision's MobileNetV2 initialisation of convolutions and BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _build_layers(
    width_mult: float,
    output_stride: int,
    bn_eps: float,
    bn_momentum: float,
    divisible_by: int = 8,
    padding: Padding = "torch",
    min_channels: int = MIN_CHANNELS,
    scale_last_conv: bool = False,
) -> tuple[list[nn.Module], list[FeatureInfo]]:
    """All 19 layers and the info of every returnable feature at this width and stride."""
    bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}

    def width(c: float) -> int:
        return make_divisible(c * width_mult, divisible_by, min_channels)

    channels = width(STEM_CHANNELS)
    layers: list[nn.Module] = [ConvBNReLU6(3, channels, 3, stride=2, padding=padding, **bn)]
    stride, rate = 2, 1
    infos = [FeatureInfo("layer_1", channels, stride, 1)]
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        out_channels = width(c)
        for i in range(n):
            layer_stride = s if i == 0 else 1
            layer_rate = 1
            if layer_stride > 1 and stride == output_stride:
                # Past the target stride: trade the stride for dilation (TF rule).
                layer_stride, layer_rate, rate = 1, rate, rate * s
            elif layer_stride > 1:
                stride *= layer_stride
            else:
                layer_rate = rate
            block = InvertedResidual(
                channels,
                out_channels,
                layer_stride,
                t,
                dilation=layer_rate,
                padding=padding,
                # TF-slim: expand_input_by_factor(6) rounds to 8; the t=1 block does not.
                hidden_channels=make_divisible(channels * t, 8) if t != 1 else channels,
                **bn,
            )
            index = len(layers) + 1
            if t != 1:
                # The expansion runs before the depthwise conv, at the input's stride.
                input_stride = stride // layer_stride
                infos.append(
                    FeatureInfo(
                        f"layer_{index}{EXPANSION_SUFFIX}",
                        block.hidden_channels,
                        input_stride,
                        index,
                    )
                )
            layers.append(block)
            infos.append(FeatureInfo(f"layer_{index}", out_channels, stride, index))
            channels = out_channels
    last_mult = width_mult if scale_last_conv else max(1.0, width_mult)
    last = make_divisible(LAST_CHANNELS * last_mult, divisible_by, min_channels)
    layers.append(ConvBNReLU6(channels, last, 1, **bn))
    infos.append(FeatureInfo(f"layer_{len(layers)}", last, stride, len(layers)))
    return layers, infos


#: width multipliers of published MobileNetV2 weights, tried when weights do not say theirs
PUBLISHED_WIDTHS = (1.0, 0.5, 0.75, 0.35, 1.3, 1.4)


def layer_channels(
    width_mult: float, divisible_by: int = 8, min_channels: int = MIN_CHANNELS
) -> list[int]:
    """Output channels of ``layer_1`` .. ``layer_18`` at this width and rounding."""
    channels = [make_divisible(STEM_CHANNELS * width_mult, divisible_by, min_channels)]
    for _, c, n, _ in INVERTED_RESIDUAL_SETTING:
        channels += [make_divisible(c * width_mult, divisible_by, min_channels)] * n
    return channels


def infer_width(
    channels: Sequence[int], min_channels: int = MIN_CHANNELS
) -> tuple[float, int] | None:
    """``(width_mult, divisible_by)`` of a published width whose ``layer_1`` .. ``layer_18``
    have these output channels (rounding 8 tried first) with ``min_channels``, or ``None``."""
    for width_mult in PUBLISHED_WIDTHS:
        for divisible_by in (8, 1):
            if layer_channels(width_mult, divisible_by, min_channels) == list(channels):
                return width_mult, divisible_by
    return None


@register_model(kind="backbone", default_size=224)
def mobilenet_v2(
    width_mult: float = 1.0,
    output_stride: int = 32,
    out_features: Sequence[str] | None = None,
    frozen_stages: int = 0,
    freeze_bn: bool = False,
    weights: str | Path | None = None,
    bn_eps: float = BN_EPS,
    bn_momentum: float = BN_MOMENTUM,
    divisible_by: int = 8,
    padding: Padding = "torch",
) -> MobileNetV2:
    """Build a MobileNetV2 feature extractor; see ``MobileNetV2`` for the arguments."""
    return MobileNetV2(
        width_mult=width_mult,
        output_stride=output_stride,
        out_features=out_features,
        frozen_stages=frozen_stages,
        freeze_bn=freeze_bn,
        weights=weights,
        bn_eps=bn_eps,
        bn_momentum=bn_momentum,
        divisible_by=divisible_by,
        padding=padding,
    )
