"""SegmentationTask: loss, full-image evaluation, multi-scale + flip, predict, DDP, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from PIL import Image
from torch import Tensor

from tasks.data.base import LoaderOptions
from tasks.data.demo.segmentation import make_segmentation_demo
from tasks.data.segmentation import collate_segmentation
from tasks.data.voc import VOCSegmentationDataModule
from tasks.segmentation import SegmentationTask
from tasks.writers.predictions import SegmentationPredictionWriter
from tests.tasks.test_segmentation_data import write_voc

SPLITS = {"train": ["a1", "a2", "a3", "a4"], "val": ["b1", "b2", "b3", "b4", "b5"]}


def _task(**kwargs) -> SegmentationTask:
    torch.manual_seed(0)
    kwargs.setdefault("num_classes", 21)
    return SegmentationTask(width_mult=0.35, **kwargs)


def _trainer(**kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def test_loss_ignores_void_and_all_void_crop_is_finite() -> None:
    task = _task(num_classes=3)
    images = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 3, (2, 32, 32))
    loss = task.training_step({"image": images, "mask": masks}, 0)
    task.eval()  # same dropout and BN for the comparison
    logits = task(images)
    void = masks.clone()
    void[:, :16] = 255
    expected = torch.nn.functional.cross_entropy(logits, void, ignore_index=255)
    log_probs = logits.log_softmax(1)
    got_sum, valid = task._loss_terms(log_probs, void)
    torch.testing.assert_close(got_sum / valid, expected)
    assert valid == 2 * 16 * 32
    task.train()
    all_void = torch.full_like(masks, 255)
    loss = task.training_step({"image": images, "mask": all_void}, 0)
    assert loss.item() == 0.0


def test_padded_batch_is_evaluated_per_image_unpadded() -> None:
    """A batch of differently sized images must give the confusion matrix of evaluating
    every image alone at its own size (the padding must not leak into predictions)."""
    task = _task(num_classes=4).eval()
    rng = np.random.default_rng(0)
    samples = []
    for h, w in ((37, 45), (29, 61), (37, 45)):
        samples.append(
            {
                "image": torch.randn(3, h, w),
                "mask": torch.from_numpy(rng.integers(0, 4, (h, w))).long(),
                "path": f"{h}x{w}",
            }
        )
    with torch.no_grad():
        task._eval_step(collate_segmentation(samples), task.val_metrics)
        batched = task.val_metrics.compute()["confmat"].clone()
        task.val_metrics.reset()
        for s in samples:
            task._eval_step(collate_segmentation([s]), task.val_metrics)
        single = task.val_metrics.compute()["confmat"]
    assert batched.sum() == sum(s["mask"].numel() for s in samples)
    assert torch.equal(batched, single)


def _voc_module(root: Path, **kwargs) -> VOCSegmentationDataModule:
    kwargs.setdefault("loader", LoaderOptions(batch_size=2, eval_batch_size=2))
    return VOCSegmentationDataModule(str(root), crop_size=32, **kwargs)


def test_validate_counts_every_full_image_once_with_multiscale_flip(tmp_path: Path) -> None:
    voc = write_voc(tmp_path, SPLITS, num_classes=3)
    labelled = 0
    for image_id in SPLITS["val"]:
        with Image.open(voc / "SegmentationClass" / f"{image_id}.png") as png:
            labelled += int((np.asarray(png) != 255).sum())
    task = _task(eval_scales=(0.75, 1.25), eval_flip=True)
    metrics = _trainer().validate(task, datamodule=_voc_module(tmp_path), verbose=False)[0]
    assert int(task.last_confmat["val"].sum()) == labelled  # full images, no crop, no repeat
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "val/iou_background" in metrics
    assert metrics["val/pixel_acc"] == pytest.approx(
        float(task.last_confmat["val"].diagonal().sum()) / labelled
    )


def test_num_classes_must_match_data(tmp_path: Path) -> None:
    write_voc(tmp_path, SPLITS, num_classes=3)
    with pytest.raises(ValueError, match="model.num_classes=5 but the data has 21 classes"):
        _trainer().validate(_task(num_classes=5), datamodule=_voc_module(tmp_path))
    with pytest.raises(ValueError, match="eval_scales"):
        _task(eval_scales=(0.0,))
    with pytest.raises(ValueError, match="class_names has 2 names but num_classes=21"):
        _task(class_names=["a", "b"])


def test_predict_writes_palette_masks_and_overlays(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sizes = {"x.jpg": (30, 41), "sub/y.png": (27, 33)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    write_voc(tmp_path / "voc", SPLITS, num_classes=3)
    dm = _voc_module(tmp_path / "voc", predict_dir=str(folder))
    writer = SegmentationPredictionWriter(str(tmp_path / "out"))
    _trainer(callbacks=[writer]).predict(_task(), datamodule=dm, return_predictions=False)
    for name, (h, w) in sizes.items():
        mask_path = tmp_path / "out" / Path(name).with_suffix(".png")
        with Image.open(mask_path) as png:
            assert png.mode == "P" and png.size == (w, h)
            assert np.asarray(png).max() < 21
        with Image.open(mask_path.with_name(mask_path.stem + "_overlay.jpg")) as overlay:
            assert overlay.size == (w, h)


class _SaveConfmat(Callback):
    """Saves each rank's summed confusion matrix and metrics after validation."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_validation_end(self, trainer: Trainer, pl_module: SegmentationTask) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(
            {"confmat": pl_module.last_confmat["val"], "metrics": metrics},
            Path(self.folder) / f"rank{trainer.global_rank}.pt",
        )


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process(tmp_path: Path) -> None:
    """5 validation images over 2 processes (3 + 2, so different batch counts): the summed
    confusion matrix and the logged metrics equal those of one process."""
    write_voc(tmp_path / "voc", SPLITS, num_classes=3)
    task = _task(num_classes=21)
    state = {k: v.clone() for k, v in task.state_dict().items()}
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir()
    ddp_dir.mkdir()
    _trainer(devices=1, callbacks=[_SaveConfmat(str(single_dir))]).validate(
        task, datamodule=_voc_module(tmp_path / "voc"), verbose=False
    )
    other = _task(num_classes=21)
    other.load_state_dict(state)
    _trainer(devices=2, strategy="ddp_spawn", callbacks=[_SaveConfmat(str(ddp_dir))]).validate(
        other, datamodule=_voc_module(tmp_path / "voc"), verbose=False
    )
    single = torch.load(single_dir / "rank0.pt")
    ranks = [torch.load(ddp_dir / f"rank{r}.pt") for r in (0, 1)]
    for result in ranks:
        assert torch.equal(result["confmat"], single["confmat"])
        for key in ("val/miou", "val/pixel_acc", "val/iou_background"):
            assert result["metrics"][key] == pytest.approx(single["metrics"][key], abs=1e-6)
        assert result["metrics"]["val/loss"] == pytest.approx(single["metrics"]["val/loss"])


@pytest.mark.slow
def test_overfits_a_few_demo_images(tmp_path: Path) -> None:
    make_segmentation_demo(tmp_path, num_classes=3, train_images=2, val_images=1, size=64, seed=0)
    dm = VOCSegmentationDataModule(
        str(tmp_path),
        crop_size=64,
        min_scale=1.0,
        max_scale=1.0,
        flip=False,
        loader=LoaderOptions(batch_size=2, num_workers=4),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    task = _task(
        num_classes=3, optimizer=lambda params: torch.optim.Adam(params, lr=5e-3), dropout=0.0
    )
    optimizer = task.configure_optimizers()
    task.train()
    losses = []
    for _ in range(40):
        loss = task.training_step(batch, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Scored with batch statistics: with 2 images the BatchNorm running averages (and
    # the image-pooling BN above all) lag behind; real runs use batches of 8-16.
    with torch.no_grad():
        task.val_metrics.update(task(batch["image"]), batch["mask"])
    miou = task.val_metrics.compute()["miou"].item()
    assert losses[-1] < 0.25 * losses[0] and miou > 0.75, (losses[0], losses[-1], miou)


def _train_step_with_layout(
    channels_last: bool, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, list[bool]]:
    """Loss, all gradients (flattened) and the layouts the first conv saw, of one
    training step on fixed data."""
    task = _task(num_classes=5, dropout=0.0, channels_last=channels_last).to(dtype)
    seen: list[bool] = []
    first_conv = task.model.backbone.features[0][0]
    first_conv.register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    g = torch.Generator().manual_seed(1)
    batch = {"image": torch.randn(2, 3, 48, 48, generator=g).to(dtype),
             "mask": torch.randint(0, 5, (2, 48, 48), generator=g)}  # fmt: skip
    batch["mask"][:, :5] = 255
    loss = task.training_step(batch, 0)
    loss.backward()
    return loss.detach(), torch.cat([p.grad.flatten() for p in task.parameters()]), seen


def test_channels_last_training_is_the_same_function() -> None:
    """The opt-in changes only the memory layout: the network sees NHWC images (the
    default keeps NCHW) and computes the same loss and gradients. In float64 they agree to
    1e-10; in float32 the loss agrees to 1e-6, while the gradients of this tiny, fresh
    network (BN over 2 images, 3x3 maps) amplify rounding to about 1% (NCHW float32 is
    itself 0.2% off its float64 value), so float32 gradients are not compared."""
    loss, _, seen = _train_step_with_layout(False)
    loss_cl, _, seen_cl = _train_step_with_layout(True)
    assert seen == [False] and seen_cl == [True]
    torch.testing.assert_close(loss_cl, loss, rtol=1e-6, atol=0.0)
    loss64, grads64, _ = _train_step_with_layout(False, torch.float64)
    loss64_cl, grads64_cl, seen64_cl = _train_step_with_layout(True, torch.float64)
    assert seen64_cl == [True]
    torch.testing.assert_close(loss64_cl, loss64, rtol=1e-10, atol=0.0)
    assert ((grads64_cl - grads64).norm() / grads64.norm()).item() < 1e-10
