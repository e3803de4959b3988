"""Building blocks of MobileNetV2: conv-BN-ReLU6 and the inverted residual.

Module layout (and so state-dict keys) follows torchvision's ``mobilenet_v2`` so that its
weight files load without renaming.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# BatchNorm defaults of PyTorch. TF trains with eps 1e-3 and decay 0.9997; the detection
# and segmentation builders pass those through ``bn_eps`` / ``bn_momentum``.
BN_EPS = 1e-5
BN_MOMENTUM = 0.1

#: ``"torch"``: symmetric padding ``(k - 1) // 2 * dilation``; ``"tf"``: TF's "SAME" padding
Padding = Literal["torch", "tf"]
PADDINGS: tuple[str, ...] = ("torch", "tf")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never going more than 10% down.

    This is the rounding of the TF-slim reference (and torchvision) for width multipliers.
    """
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def check_padding(padding: str) -> None:
    """Raise ``ValueError`` unless ``padding`` is one of ``PADDINGS``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "SAME" padding, computed from the input size.

    TF pads ``total = max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)`` per side pair
    and puts the odd pixel *after* (bottom/right): a stride-2 3x3 conv on an even size pads
    0 before and 1 after, where PyTorch's ``padding=1`` pads 1 on both sides. On odd sizes
    and at stride 1 (odd kernels) both agree. Same parameters and state-dict keys as
    ``nn.Conv2d``; the ``padding`` attribute is 0 (the padding is applied in ``forward``).
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for dim in (-1, -2):  # F.pad takes the last dimension first
            size, k = x.shape[dim], self.kernel_size[dim]
            s, d = self.stride[dim], self.dilation[dim]
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class _ReLU6InPlaceFunction(torch.autograd.Function):
    """``clamp_(0, 6)`` whose backward reads the output, not a saved copy of the input.

    ``0 < y < 6`` holds exactly where ``0 < x < 6`` does (``y = x`` there, and ``y`` is 0
    or 6 elsewhere), so the gradient is bit for bit PyTorch's; autograd's own in-place
    ReLU6 clones the input to keep it for backward, a full copy of every activation.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.mark_dirty(x)
        out = x.clamp_(0.0, 6.0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return torch.ops.aten.hardtanh_backward(grad, out, 0.0, 6.0)


class InPlaceReLU6(nn.ReLU6):
    """In-place ``nn.ReLU6`` that saves no copy of its input for backward (training-step
    speed on CPU; outputs and gradients are identical to ``nn.ReLU6(inplace=True)``).

    Only tensors that need a gradient take the custom path; inference, export and tracing
    see a plain in-place ReLU6. Shapes: any -> same.
    """

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled() and not torch.jit.is_tracing():
            return _ReLU6InPlaceFunction.apply(x)
        return super().forward(x)


class ConvBNReLU6(nn.Sequential):
    """``Conv2d -> BatchNorm2d -> ReLU6`` (indices 0, 1, 2), "same" padding for odd kernels.

    Args:
        in_channels: input channels C_in.
        out_channels: output channels C_out.
        kernel_size: square kernel size (odd).
        stride: convolution stride.
        groups: ``in_channels`` for a depthwise convolution.
        dilation: dilation rate; padding grows with it so the spatial size only depends on stride.
        activation: append ReLU6 when True.
        bn_eps, bn_momentum: BatchNorm settings.
        padding: ``"torch"`` (symmetric) or ``"tf"`` (TF "SAME": a ``Conv2dSame`` for
            strided convolutions, where the two differ on even input sizes).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: bool = True,
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
        padding: Padding = "torch",
    ) -> None:
        check_padding(padding)
        conv_type = Conv2dSame if padding == "tf" and stride > 1 else nn.Conv2d
        layers: list[nn.Module] = [
            conv_type(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=(kernel_size - 1) // 2 * dilation,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation:
            layers.append(InPlaceReLU6())
        super().__init__(*layers)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection.

    The expansion (``conv[0]``) is skipped when ``expand_ratio == 1``. The residual is added
    only when ``stride == 1`` and ``in_channels == out_channels``. The expansion has
    ``round(in_channels * expand_ratio)`` channels, or ``hidden_channels`` when given (TF-slim
    rounds it to a multiple of 8 even when the block widths are not rounded).

    Shapes: ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        dilation: int = 1,
        bn_eps: float = BN_EPS,
        bn_momentum: float = BN_MOMENTUM,
        padding: Padding = "torch",
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio) if hidden_channels is None else hidden_channels
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1, **bn))
        layers += [
            ConvBNReLU6(
                hidden, hidden, 3, stride, groups=hidden, dilation=dilation, padding=padding, **bn
            ),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        self.conv = nn.Sequential(*layers)
        self.stride = stride
        self.expand_ratio = expand_ratio
        self.hidden_channels = hidden
        self.out_channels = out_channels
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Like ``forward`` but also returns the expansion output ``[B, hidden, H, W]``.

        This is the SSDLite tap on layer_15: taken after the 1x1 expansion, before the
        strided depthwise convolution.
        """
        if self.expand_ratio == 1:
            raise ValueError("a block without expansion has no expansion output")
        expansion = self.conv[0](x)
        out = self.conv[1:](expansion)
        return (x + out if self.use_residual else out), expansion
