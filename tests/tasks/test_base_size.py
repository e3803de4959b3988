"""``base_size``: photos of any size brought to one scale for training and inference, and
scored at their own full resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tasks.data.seg_transforms import segmentation_transforms
from tasks.data.segmentation import SegmentationDataset, collate_segmentation
from tasks.segmentation import SegmentationTask
from tasks.viz.figures import draw_examples

MEAN = STD = (0.5, 0.5, 0.5)


def _photo(tmp_path: Path, name: str, height: int, width: int) -> tuple[Path, Path]:
    """A photo whose left third is white (class 1) and the rest black (class 0)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 3] = 255
    mask = (image[..., 0] > 0).astype(np.uint8)
    image_path, mask_path = tmp_path / f"{name}.png", tmp_path / f"{name}_mask.png"
    Image.fromarray(image).save(image_path)
    Image.fromarray(mask).save(mask_path)
    return image_path, mask_path


def _bright_is_class_1(images: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``[B, 2, H, W]`` of a perfect 'model' of ``_photo``."""
    x = images.mean(dim=1, keepdim=True) * 20
    return F.log_softmax(torch.cat([-x, x], dim=1), dim=1)


def test_evaluation_runs_at_base_size_and_scores_every_photo_pixel(tmp_path: Path) -> None:
    sizes = [(120, 180), (90, 60)]
    samples = [_photo(tmp_path, f"p{i}", h, w) for i, (h, w) in enumerate(sizes)]
    eval_transform = segmentation_transforms(False, MEAN, STD, base_size=30)
    dataset = SegmentationDataset(samples, eval_transform, num_classes=2)
    items = [dataset[0], dataset[1]]
    assert [tuple(it["image"].shape[-2:]) for it in items] == [(20, 30), (30, 20)]
    assert [tuple(it["orig_size"].tolist()) for it in items] == sizes
    batch = collate_segmentation(items)
    assert tuple(batch["mask"].shape) == (2, 120, 180)  # masks padded to their own size

    task = SegmentationTask(num_classes=2, width_mult=0.35).eval()
    seen: list[tuple[int, ...]] = []

    def log_probs(images: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(images.shape[-2:]))
        return _bright_is_class_1(images)

    task._log_probs = log_probs  # type: ignore[method-assign]
    with torch.no_grad():
        task._eval_step(batch, task.val_metrics)
    result = task.val_metrics.compute()
    assert sorted(seen) == [(20, 30), (30, 20)]  # inference at base size
    assert int(result["confmat"].sum()) == sum(h * w for h, w in sizes)  # scored at full size
    assert result["miou"].item() > 0.95

    pictures = draw_examples(task, batch)  # truth | prediction, at the inference size
    assert [p.shape[:2] for p in pictures] == [(30, 64), (30, 64)]


def test_training_brings_small_photos_up_to_base_size(tmp_path: Path) -> None:
    """A 40x80 photo with base_size 160 is 80x160 before the crop: an 80-pixel crop at
    scale 1 then holds no void padding (without base_size it would be half void)."""
    image = np.full((40, 80, 3), 128, np.uint8)
    mask = np.ones((40, 80), np.uint8)
    for base_size, void in ((160, False), (None, True)):
        transform = segmentation_transforms(
            True, MEAN, STD, 80, 1.0, 1.0, False, base_size=base_size
        )
        out = transform(image=image, mask=mask)
        assert out["image"].shape[:2] == (80, 80)
        assert bool((out["mask"] == 255).any()) == void


def test_base_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="base_size must be a positive"):
        segmentation_transforms(True, MEAN, STD, base_size=0)
