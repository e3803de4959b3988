"""SegmentationTask's TF evaluation protocol option (pad to the crop size)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from heads import predict_padded
from tasks import SegmentationTask


def test_eval_pad_to_runs_the_model_on_the_padded_image() -> None:
    torch.manual_seed(0)
    task = SegmentationTask(num_classes=3, width_mult=0.35, eval_pad_to=65).eval()
    with torch.no_grad():
        task.model.head.classifier.weight.mul_(1000)  # random init is nearly constant
    images = torch.randn(1, 3, 40, 50)
    expected = F.log_softmax(predict_padded(task.model, images, 65), dim=1)
    torch.testing.assert_close(task._log_probs(images), expected)
    with torch.no_grad():
        unpadded = F.log_softmax(task.model(images), dim=1)
    assert (task._log_probs(images) - unpadded).abs().max() > 1e-3


def test_predict_padded_refuses_larger_images() -> None:
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="70x50 is larger than the crop size 65x65"):
        predict_padded(model, torch.zeros(1, 3, 70, 50), 65)
