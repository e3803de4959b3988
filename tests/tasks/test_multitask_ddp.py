"""The joint task keeps the single tasks' guarantees: 2-process DDP validation gives the
1-process numbers (12 COCO stats and mIoU), and a run resumed mid-epoch from a checkpoint
ends exactly where an uninterrupted one does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from heads import PostprocessOptions
from tasks import ModelCheckpoint, MultiTaskTask, WarmupCosineLR
from tasks.data.base import LoaderOptions
from tasks.data.demo import SceneOptions
from tasks.data.demo.multitask import DemoMultiTaskDataModule

SMALL = {"num_det_classes": 3, "num_seg_classes": 4, "width_mult": 0.35, "image_size": 64}


def _data(root: Path, **kwargs) -> DemoMultiTaskDataModule:
    args = {"scene": SceneOptions(num_train=10, num_val=7, generated_size=64), "image_size": 64}
    return DemoMultiTaskDataModule(root=str(root), **{**args, **kwargs})


@pytest.mark.slow
def test_validate_ddp_spawn_equals_one_process(tmp_path):
    def run(devices: int) -> dict[str, float]:
        dm = _data(
            tmp_path / "demo", loader=LoaderOptions(batch_size=2, eval_batch_size=2)
        )  # 7 images: uneven
        torch.manual_seed(0)
        task = MultiTaskTask(
            **SMALL,
            postprocess=PostprocessOptions(score_threshold=0.0, max_detections=300, nms_iou=0.9),
        )
        # Zero box deltas: the detections are anchors with random scores, so the COCO
        # numbers are non-zero and depend on every image.
        with torch.no_grad():
            for predictor in task.model.head.box_predictors:
                predictor[1].weight.zero_()
        trainer = Trainer(
            accelerator="cpu", devices=devices, logger=False, enable_progress_bar=False,
            enable_model_summary=False, strategy="ddp_spawn" if devices > 1 else "auto",
        )  # fmt: skip
        (metrics,) = trainer.validate(task, dm)
        return metrics

    single = run(1)
    double = run(2)
    assert single["val/mar_100"] > 0.02 and single["val/miou"] > 0.0
    assert {"val/map", "val/mar_large", "val/miou", "val/pixel_acc"} <= set(single)
    # Every metric, both losses included (the detection loss from summed state).
    loss_det = single.pop("val/loss_det")
    assert double.pop("val/loss_det") == pytest.approx(loss_det, rel=1e-6)
    assert double == single


def _fit(root: Path, out: Path, resume: str | None = None) -> MultiTaskTask:
    """6 steps; the uninterrupted run saves ``out/step3.ckpt`` on the way (mid-epoch)."""
    seed_everything(0)
    task = MultiTaskTask(
        **SMALL,
        loss_weighting="uncertainty",
        optimizer=lambda params: torch.optim.SGD(params, lr=0.02, momentum=0.9),
        lr_scheduler=lambda opt: WarmupCosineLR(opt, total_steps=8, warmup_steps=2),
    )
    trainer = Trainer(
        accelerator="cpu", max_steps=6, max_epochs=-1, deterministic=True, logger=False,
        callbacks=[
            ModelCheckpoint(out, filename="{step}", every_n_train_steps=3, save_top_k=-1)
        ],
        enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        default_root_dir=out,
    )  # fmt: skip
    trainer.fit(
        task, _data(root, loader=LoaderOptions(batch_size=4), augmentation="ssd"), ckpt_path=resume
    )
    return task


@pytest.mark.slow
def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    """10 images, batch 4 -> 2 steps per epoch (drop_last); resume at step 3 (mid-epoch)."""
    torch.set_num_threads(1)
    root = tmp_path / "demo"
    expected = _fit(root, tmp_path / "a").state_dict()
    checkpoint = tmp_path / "a" / "step=3.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3
    resumed = _fit(root, tmp_path / "b", resume=str(checkpoint))
    state = resumed.state_dict()
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=1e-6, msg=name)
