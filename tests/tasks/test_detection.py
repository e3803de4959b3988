"""Detection task: configs through the real CLI, predict output, checkpoints, overfitting."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from tasks import DetectionTask
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.demo import SceneOptions
from tasks.data.demo.detection import DemoDetectionDataModule, make_detection_demo
from tests.tasks.test_coco_data import write_coco

CONFIGS = Path(__file__).parents[2] / "configs"
SMALL_MODEL = ["--model.init_args.width_mult=0.35"]


def test_demo_set_is_deterministic(tmp_path):
    for name in ("a", "b"):
        make_detection_demo(tmp_path / name, 3, 3, 2, 64, 3, 0.2, 0.5, 0.3, seed=7)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 7  # 5 images + 2 annotation files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_demo_module_checks_its_arguments():
    with pytest.raises(ValueError, match="num_classes must be in 1..6, got 9"):
        DemoDetectionDataModule(num_classes=9)


def test_demo_config_through_the_cli_fit_and_predict(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    common = [
        "-c", str(CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"),
        f"--trainer.default_root_dir={out}",
        "--data.init_args.scene.num_train=6",
        "--data.init_args.scene.num_val=3",
        "--data.init_args.loader.batch_size=2",
        *SMALL_MODEL,
    ]  # fmt: skip
    cli_main(["fit", *common, "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"])
    images = tmp_path / "images"
    make_detection_demo(tmp_path / "gen", 3, 1, 2, 80, 3, 0.2, 0.5, 0.0, seed=1)
    (tmp_path / "gen" / "val").rename(images)
    preds = tmp_path / "preds"
    cli_main(
        [
            "predict", *common,
            f"--data.init_args.predict_dir={images}",
            f"--trainer.callbacks.init_args.output_dir={preds}",
            "--model.init_args.postprocess.score_threshold=0.0",
            "--trainer.enable_progress_bar=false",
            "--draw_threshold=0.0",  # the command-line option reaches the writer
        ]
    )  # fmt: skip
    assert re.search(r"on 2 images; \d+ drawn at score >= 0$", caplog.text, re.M)
    drawn = sorted(p.name for p in preds.glob("*.jpg"))
    assert drawn == ["000000.jpg", "000001.jpg"]
    results = json.loads((preds / "detections.json").read_text())
    assert results and {"image_id", "file_name", "category_id", "bbox", "score"} <= set(results[0])
    assert {r["image_id"] for r in results} == {1, 2}
    assert {r["category_id"] for r in results} <= {1, 2, 3}


def test_coco_config_through_the_cli(tmp_path):
    root = write_coco(tmp_path / "coco")
    cli_main(
        [
            "fit",
            "-c", str(CONFIGS / "detection_coco_ssdlite_mobilenetv2.yaml"),
            f"--data.init_args.root={root}",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--trainer.strategy=auto",
            "--trainer.sync_batchnorm=false",
            "--trainer.fast_dev_run=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--model.init_args.num_classes=3",
            "--model.init_args.weights_backbone=null",
            "--data.init_args.loader.batch_size=2",
            "--data.init_args.loader.num_workers=0",
            "--data.init_args.loader.pin_memory=false",
            *SMALL_MODEL,
        ]
    )  # fmt: skip


def test_wrong_num_classes_is_reported(tmp_path):
    dm = DemoDetectionDataModule(
        root=str(tmp_path / "demo"), scene=SceneOptions(num_train=2, num_val=2), image_size=64
    )
    task = DetectionTask(num_classes=5, width_mult=0.35, image_size=64)
    trainer = Trainer(accelerator="cpu", fast_dev_run=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="model.num_classes=5 but the data has 3 classes"):
        trainer.fit(task, dm)


def test_checkpoint_keeps_the_category_map(tmp_path):
    root = write_coco(tmp_path / "coco")
    from tasks.data.coco import COCODataModule

    dm = COCODataModule(str(root), image_size=64, augmentation="none",
                        loader=LoaderOptions(batch_size=2))  # fmt: skip
    task = DetectionTask(num_classes=3, width_mult=0.35, image_size=64)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=False,
        enable_progress_bar=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(task, dm)
    assert trainer.callback_metrics["val/map"].numel() == 1
    assert {f"val/{n}" for n in ("map", "map_50", "mar_100", "mar_large")} <= set(
        trainer.callback_metrics
    )
    ckpt = next(tmp_path.rglob("*.ckpt"))
    restored = DetectionTask.load_from_checkpoint(ckpt, weights_only=True)
    assert restored.category_ids == [5, 9, 11]
    assert restored.class_names == ["circle", "square", "triangle"]


@pytest.mark.slow
def test_overfits_a_few_images(tmp_path):
    """Trained on 4 images, the model finds their objects (COCO AP50 on the same images)."""
    torch.manual_seed(0)
    dm = DemoDetectionDataModule(
        root=str(tmp_path / "demo"), image_size=96, empty_fraction=0.0,
        scene=SceneOptions(num_train=4, num_val=4, generated_size=96, max_objects=2,
                           min_object_size=0.3, max_object_size=0.6, seed=3),
        augmentation="none", loader=LoaderOptions(batch_size=4),
    )  # fmt: skip
    dm.val_split = dm.train_split  # evaluate on the training images
    task = DetectionTask(
        num_classes=3, width_mult=0.35, image_size=96,
        optimizer=lambda p: torch.optim.AdamW(p, lr=0.01),
    )  # fmt: skip
    trainer = Trainer(
        accelerator="cpu", max_epochs=60, check_val_every_n_epoch=1000, num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(task, dm)
    assert float(trainer.callback_metrics["train/loss"]) < 0.5
    # 60 steps are too few for BN running averages (momentum 0.03) to settle: set them to
    # the exact statistics of the training batch ("precise BN") before evaluating.
    images, _ = next(iter(dm.train_dataloader()))
    for bn in task.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    with torch.no_grad():
        task.model.train()(images)
    (metrics,) = trainer.validate(task, dm, verbose=False)
    assert metrics["val/map_50"] > 0.9


def _detector_step(
    channels_last: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
    """Loss, all gradients (flattened) and the layouts the first conv saw, of one
    training step on fixed data."""
    torch.manual_seed(0)
    task = DetectionTask(num_classes=3, width_mult=0.35, image_size=64, channels_last=channels_last)
    task = task.to(dtype)
    seen: list[bool] = []
    task.model.backbone.features[0][0].register_forward_pre_hook(
        lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64, generator=g).to(dtype)
    boxes = torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 10.0, 60.0, 50.0]], dtype=dtype)
    targets = [{"boxes": boxes[i : i + 1], "labels": torch.tensor([i + 1])} for i in range(2)]
    loss = task.training_step((images, targets), 0)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
    return loss.detach(), grads, seen


def test_channels_last_training_is_the_same_function() -> None:
    """The opt-in changes only the memory layout: the network sees NHWC images (the default
    keeps NCHW) and, in float64, computes the same loss and gradients."""
    loss, grads, seen = _detector_step(False, torch.float64)
    loss_cl, grads_cl, seen_cl = _detector_step(True, torch.float64)
    assert seen == [False] and seen_cl == [True]
    torch.testing.assert_close(loss_cl, loss, rtol=1e-10, atol=0.0)
    assert ((grads_cl - grads).norm() / grads.norm()).item() < 1e-10


def test_freeze_backbone_steps_holds_the_backbone_while_the_head_learns(tmp_path) -> None:
    """With ``freeze_backbone_steps=2`` the backbone's weights stay as they were through
    two optimizer steps (its BatchNorm statistics follow the data) while the head's move;
    the third step moves the backbone too."""
    from lightning.pytorch.callbacks import Callback

    torch.manual_seed(0)
    dm = DemoDetectionDataModule(
        root=str(tmp_path / "demo"), image_size=64, empty_fraction=0.0,
        scene=SceneOptions(num_train=4, num_val=1, generated_size=64, seed=3),
        augmentation="none", loader=LoaderOptions(batch_size=2),
    )  # fmt: skip
    task = DetectionTask(num_classes=3, width_mult=0.35, image_size=64, freeze_backbone_steps=2)
    states = [{k: v.clone() for k, v in task.model.state_dict().items()}]

    class Snapshots(Callback):
        def on_train_batch_end(self, *args: object) -> None:
            states.append({k: v.clone() for k, v in task.model.state_dict().items()})

    Trainer(
        accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, callbacks=[Snapshots()],
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    ).fit(task, dm)  # fmt: skip
    assert len(states) == 4
    weights = [f"backbone.{k}" for k, _ in task.model.backbone.named_parameters()]
    head = [k for k in states[0] if k.startswith("head.") and k.endswith("weight")]

    def moved(step: int, keys: list[str]) -> bool:
        return any(not torch.equal(states[step][k], states[step - 1][k]) for k in keys)

    assert [moved(step, weights) for step in (1, 2, 3)] == [False, False, True]
    assert [moved(step, head) for step in (1, 2, 3)] == [True, True, True]
    bn = "backbone.features.0.1.running_mean"
    assert not torch.equal(states[2][bn], states[0][bn])
