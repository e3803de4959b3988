"""SegmentationTask's TF evaluation protocol option (pad to the crop size)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from heads import predict_padded
from tasks import SegmentationTask


class _GlobalContext(nn.Module):
    """Logits that depend on the whole image (like DeepLab's image pooling)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return 10 * (images - images.mean(dim=(2, 3), keepdim=True))


def test_eval_pad_to_runs_the_model_on_the_padded_image() -> None:
    torch.manual_seed(0)
    task = SegmentationTask(num_classes=3, width_mult=0.35, eval_pad_to=65).eval()
    task.model = _GlobalContext()
    images = torch.randn(1, 3, 40, 50)
    padded = F.pad(images, (0, 15, 0, 25))
    expected = F.log_softmax(task.model(padded)[..., :40, :50], dim=1)
    torch.testing.assert_close(task._log_probs(images), expected)
    unpadded = F.log_softmax(task.model(images), dim=1)
    assert (task._log_probs(images) - unpadded).abs().max() > 1e-3


def test_predict_padded_refuses_larger_images() -> None:
    with pytest.raises(ValueError, match="70x50 is larger than the crop size 65x65"):
        predict_padded(nn.Identity(), torch.zeros(1, 3, 70, 50), 65)
