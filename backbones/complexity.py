"""Parameter and multiply-add counts, the way the papers count them.

Multiply-adds (MAdds) count convolutions and fully connected layers only (BatchNorm,
activations, pooling and additions are left out, as in the MobileNetV2 paper and TF-slim).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_madds(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-adds of one forward pass of ``model(*inputs, **kwargs)`` in eval mode.

    Counts ``nn.Conv2d`` (``H_out * W_out * C_out * k_h * k_w * C_in / groups``) and
    ``nn.Linear`` (``in * out`` per row) per input element of the batch dimension, so the
    result is per image when the batch is 1.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, args: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_pixel = kh * kw * (module.in_channels // module.groups) * module.out_channels
        total += output.shape[0] * output.shape[2] * output.shape[3] * per_pixel

    def linear_hook(module: nn.Linear, args: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += output.numel() // module.out_features * module.in_features * module.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
