"""The fast inference path: BatchNorm folded into convolutions, channels-last tensors,
``torch.inference_mode``.

Folding rewrites ``y = BN(conv(x))`` as one convolution with scaled weights and a bias,
which removes a full read and write of every activation map. Channels-last (NHWC) is the
layout oneDNN's depthwise and 1x1 kernels run fastest in on a CPU. Outputs equal the
unfolded model's up to float rounding (about 1e-6 relative).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_BATCHNORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair of consecutive ``nn.Sequential`` items, in place.

    The convolution becomes a convolution with a bias carrying the BatchNorm's affine map
    and running statistics; the BatchNorm is replaced by ``nn.Identity`` so indices (and
    the convolutions' state-dict keys) stay where they were. Only valid for inference: the
    module is put in eval mode.

    Args:
        module: any module; its sub-modules are searched recursively.

    Returns:
        The number of BatchNorm layers folded.
    """
    module.eval()
    folded = 0
    for child in list(module.modules()):
        if not isinstance(child, nn.Sequential):
            continue
        for i in range(len(child) - 1):
            conv, bn = child[i], child[i + 1]
            if (
                type(conv) is nn.Conv2d
                and isinstance(bn, _BATCHNORM_TYPES)
                and bn.track_running_stats
                and conv.out_channels == bn.num_features
            ):
                child[i] = fuse_conv_bn_eval(conv, bn)
                child[i + 1] = nn.Identity()
                folded += 1
    return folded


def count_batchnorm(module: nn.Module) -> int:
    """Number of BatchNorm layers left in ``module`` (0 after a complete fold)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _to_channels_last(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


class InferenceModel(nn.Module):
    """A model prepared by ``optimize_for_inference``; call it like the original.

    ``forward`` converts 4-D tensor arguments to channels-last and runs the wrapped model
    under ``torch.inference_mode`` (no autograd records, no version counters). Returned
    tensors are inference tensors: use them for reading, not as inputs to training.
    Attributes the wrapper lacks (e.g. a detector's ``forward_raw`` or ``num_classes``) are
    looked up on the wrapped model; methods reached that way run without the wrapper's
    ``inference_mode``, so call them inside ``with torch.inference_mode():``.

    Attributes:
        model: the folded, channels-last, eval-mode model.
        folded: number of BatchNorm layers folded into convolutions.
    """

    def __init__(self, model: nn.Module, folded: int, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.folded = folded
        self.channels_last = channels_last

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            args = tuple(_to_channels_last(a) for a in args)
            kwargs = {k: _to_channels_last(v) for k, v in kwargs.items()}
        with torch.inference_mode():
            return self.model(*args, **kwargs)

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise RuntimeError(
                "an InferenceModel has its BatchNorm folded and cannot be trained; "
                "train the original model and call optimize_for_inference again"
            )
        return super().train(False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def optimize_for_inference(
    model: nn.Module, channels_last: bool = True, inplace: bool = False
) -> InferenceModel:
    """Return an eval-mode copy of ``model`` with BatchNorm folded, ready for fast inference.

    Works on any model of the zoo (classifier, SSDLite, DeepLabv3) and on torchvision's
    MobileNets: every ``Conv2d -> BatchNorm2d`` pair inside an ``nn.Sequential`` is folded.

    Args:
        model: a trained model (it is not changed unless ``inplace``).
        channels_last: convert weights and inputs to the NHWC memory format.
        inplace: fold ``model`` itself instead of a deep copy (saves memory; ``model``
            can no longer be trained).

    Returns:
        An ``InferenceModel`` whose outputs equal ``model.eval()``'s within 1e-4.

    Example:
        >>> fast = optimize_for_inference(mobilenet_v2_classifier(num_classes=10))
        >>> fast(torch.randn(8, 3, 224, 224)).shape
        torch.Size([8, 10])
    """
    if isinstance(model, InferenceModel):
        return model
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    folded = fold_batchnorm(target)
    if channels_last:
        target = target.to(memory_format=torch.channels_last)
    for p in target.parameters():
        p.requires_grad_(False)
    return InferenceModel(target, folded, channels_last)


#: alias, the name the issue uses
fast_inference: Callable[..., InferenceModel] = optimize_for_inference
