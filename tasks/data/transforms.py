"""Normalization constants and the shared albumentations pieces."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never call home on import

import albumentations as A
import numpy as np
import torch

#: torchvision's ImageNet statistics (what its ImageNet weights expect)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: maps [0, 255] to [-1, 1], the TF convention of SSDLite and DeepLab
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)
SYMMETRIC_STD = (0.5, 0.5, 0.5)


def normalize(mean: tuple[float, ...], std: tuple[float, ...]) -> A.Normalize:
    """albumentations Normalize for uint8 input: ``(x / 255 - mean) / std``."""
    return A.Normalize(mean=mean, std=std, max_pixel_value=255.0)


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """``[H, W, 3]`` float array -> contiguous ``[3, H, W]`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def denormalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Undo ``normalize``: ``[B, 3, H, W]`` float -> ``uint8`` in [0, 255]."""
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return ((images * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
