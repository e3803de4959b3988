"""Joint detection + segmentation task: demo config through the real CLI, both metrics
exactly as the single tasks compute them, loss weighting, starting from single-task
checkpoints, bad input."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image
from torch import Tensor

from heads import MultiBoxLossOptions, PostprocessOptions
from heads.deeplabv3 import deeplabv3_mobilenet_v2
from heads.ssdlite import ssdlite_mobilenet_v2
from tasks import MultiTaskTask
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.demo import SceneOptions
from tasks.data.demo.multitask import DemoMultiTaskDataModule, make_multitask_demo
from tasks.metrics.coco import evaluate_coco
from tasks.metrics.segmentation import confusion_matrix, iou_from_confusion

CONFIGS = Path(__file__).parents[2] / "configs"
SMALL = {"num_det_classes": 3, "num_seg_classes": 4, "width_mult": 0.35, "image_size": 64}


def _demo(tmp_path: Path, num_train: int = 6, **kwargs) -> DemoMultiTaskDataModule:
    args = {
        "scene": SceneOptions(num_train=num_train, num_val=5, generated_size=64),
        "image_size": 64,
    }
    return DemoMultiTaskDataModule(root=str(tmp_path / "demo"), **{**args, **kwargs})


def _trainer(tmp_path: Path, **kwargs) -> Trainer:
    args = {
        "accelerator": "cpu",
        "max_epochs": 1,
        "limit_train_batches": 2,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
    }
    return Trainer(**{**args, **kwargs})


def test_demo_set_is_deterministic(tmp_path):
    for name in ("a", "b"):
        make_multitask_demo(tmp_path / name, 6, 3, 2, 64, 3, 0.2, 0.5, seed=7)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 7
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_demo_module_checks_its_arguments():
    with pytest.raises(ValueError, match="num_classes must be in 1..6, got 0"):
        DemoMultiTaskDataModule(num_classes=0)


def test_demo_config_through_the_cli_fit_and_predict(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "run"
    common = [
        "-c", str(CONFIGS / "multitask_demo_ssdlite_deeplabv3_mobilenetv2.yaml"),
        f"--trainer.default_root_dir={out}",
        "--data.init_args.scene.num_train=6",
        "--data.init_args.scene.num_val=3",
        "--data.init_args.loader.batch_size=2",
        "--model.init_args.width_mult=0.35",
    ]  # fmt: skip
    cli_main(["fit", *common, "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false"])
    images = tmp_path / "gen" / "val"
    make_multitask_demo(tmp_path / "gen", 3, 1, 2, 80, 3, 0.2, 0.5, seed=1)
    preds = tmp_path / "preds"
    cli_main(
        [
            "predict", *common,
            f"--data.init_args.predict_dir={images}",
            f"--trainer.callbacks.init_args.output_dir={preds}",
            "--model.init_args.postprocess.score_threshold=0.0",
            "--trainer.enable_progress_bar=false",
            "--draw_threshold=0.0",
        ]
    )  # fmt: skip
    # the report counts the joint writer's images and drawn boxes like the detector's
    assert re.search(r"on 2 images; [1-9]\d* drawn at score >= 0$", caplog.text, re.M)
    assert sorted(p.name for p in preds.glob("*.jpg")) == ["000000.jpg", "000001.jpg"]
    mask = np.asarray(Image.open(preds / "000000.png"))
    assert mask.shape == (80, 80) and mask.max() < 4
    results = json.loads((preds / "detections.json").read_text())
    assert {r["image_id"] for r in results} == {1, 2}
    assert {r["category_id"] for r in results} <= {1, 2, 3}


def test_both_metrics_equal_the_reference_computations(tmp_path):
    """val/map* are pycocotools' numbers for the detections the model makes, and val/miou
    is read off one confusion matrix over every validation pixel."""
    dm = _demo(
        tmp_path, loader=LoaderOptions(batch_size=16, eval_batch_size=2)
    )  # 5 images: batches of 2, 2, 1
    task = MultiTaskTask(**SMALL, postprocess=PostprocessOptions(score_threshold=0.0))
    # An untrained head starts with near-equal class scores (TF's 0.01 logits init, zero
    # biases, tiny features of a random backbone), whose argmax float rounding can flip:
    # give it decisive ones.
    torch.nn.init.normal_(task.model.seg_skip.bias, std=1.0)
    trainer = _trainer(tmp_path)
    trainer.validate(task, dm)
    logged = trainer.callback_metrics
    task.eval()
    results, confmat = [], torch.zeros(4, 4, dtype=torch.int64)
    with torch.no_grad():
        for images, targets in dm.val_dataloader():
            for out, t in zip(task.model(images), targets, strict=True):
                for box, score, label in zip(
                    out["boxes"], out["scores"], out["labels"], strict=True
                ):
                    x1, y1, x2, y2 = box.tolist()
                    results.append(
                        {
                            "image_id": int(t["image_id"]),
                            "category_id": int(label) + 1,
                            "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score),
                        }
                    )
                pred = out["seg_logits"].argmax(0)
                confmat += confusion_matrix(pred, t["mask"], 4)
    gt = dm.ground_truth("validate")
    stats = evaluate_coco(gt, results, [i["id"] for i in gt["images"]])
    assert stats["map"] > -1
    for name in ("map", "map_50", "map_75", "mar_100"):
        assert float(logged[f"val/{name}"]) == pytest.approx(stats[name], abs=1e-6)
    miou = float(iou_from_confusion(confmat).nanmean())
    assert float(logged["val/miou"]) == pytest.approx(miou, abs=1e-6)


@pytest.mark.parametrize("weighting", ["fixed", "uncertainty"])
def test_fit_logs_both_losses_and_weights(tmp_path, weighting):
    dm = _demo(tmp_path, loader=LoaderOptions(batch_size=3))
    task = MultiTaskTask(**SMALL, loss_weighting=weighting, det_weight=1.0, seg_weight=2.0)
    before = task.log_vars.detach().clone()
    trainer = _trainer(tmp_path, limit_val_batches=1)
    trainer.fit(task, dm)
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/loss_det", "train/loss_seg", "val/map", "val/miou"):
        assert key in logged and torch.isfinite(logged[key]), key
    moved = not torch.equal(before, task.log_vars.detach())
    assert moved == (weighting == "uncertainty")
    assert ("train/weight_seg" in logged) == (weighting == "uncertainty")


def test_combine_follows_the_weighting():
    det, seg = torch.tensor(2.0), torch.tensor(3.0)
    fixed = MultiTaskTask(**SMALL, det_weight=0.5, seg_weight=2.0)
    assert float(fixed.combine(det, seg)) == pytest.approx(0.5 * 2 + 2.0 * 3)
    learned = MultiTaskTask(**SMALL, loss_weighting="uncertainty")
    with torch.no_grad():
        learned.log_vars.copy_(torch.tensor([0.0, np.log(2.0)]))
    # exp(-0) * 2 + 0 + exp(-log 2) * 3 + log 2
    assert float(learned.combine(det, seg).detach()) == pytest.approx(
        2 + 1.5 + np.log(2.0), rel=1e-6
    )
    groups = learned.parameter_groups()
    assert any(g["params"] == [learned.log_vars] and g["weight_decay"] == 0.0 for g in groups)


def test_starts_from_detection_and_segmentation_checkpoints(tmp_path):
    torch.manual_seed(1)
    ssd = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35)
    dl = deeplabv3_mobilenet_v2(num_classes=4, width_mult=0.35)
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in ssd.state_dict().items()}}, tmp_path / "d.ckpt"
    )
    torch.save(dl.state_dict(), tmp_path / "s.pt")
    both = MultiTaskTask(
        **SMALL,
        detection_checkpoint=str(tmp_path / "d.ckpt"),
        segmentation_checkpoint=str(tmp_path / "s.pt"),
    )
    torch.testing.assert_close(both.model.head.state_dict(), ssd.head.state_dict())
    torch.testing.assert_close(both.model.seg_head.state_dict(), dl.head.state_dict())
    # with both, the backbone is the detector's
    torch.testing.assert_close(both.model.backbone.state_dict(), ssd.backbone.state_dict())
    seg_only = MultiTaskTask(**SMALL, segmentation_checkpoint=str(tmp_path / "s.pt"))
    key = "features.3.conv.0.0.weight"
    torch.testing.assert_close(
        seg_only.model.backbone.state_dict()[key], dl.backbone.state_dict()[key]
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        MultiTaskTask(
            **{**SMALL, "num_det_classes": 5}, detection_checkpoint=str(tmp_path / "d.ckpt")
        )


def test_bad_input_is_reported(tmp_path):
    with pytest.raises(
        ValueError, match="loss_weighting must be 'fixed' or 'uncertainty', got 'max'"
    ):
        MultiTaskTask(**SMALL, loss_weighting="max")
    with pytest.raises(ValueError, match="det_weight and seg_weight .* got 0.0 and 0.0"):
        MultiTaskTask(**SMALL, det_weight=0.0, seg_weight=0.0)
    dm = _demo(tmp_path)
    with pytest.raises(ValueError, match="model.num_seg_classes=5 but data.num_seg_classes=4"):
        _trainer(tmp_path, fast_dev_run=1).fit(MultiTaskTask(**{**SMALL, "num_seg_classes": 5}), dm)
    task = MultiTaskTask(**SMALL)
    images = torch.zeros(1, 3, 64, 64)
    target = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "mask": torch.zeros(32, 32, dtype=torch.int64),
    }
    with pytest.raises(
        ValueError, match=r"masks must have the images' size \(64, 64\), got \[\(32, 32\)\]"
    ):
        task.training_step((images, [target]), 0)


@pytest.mark.slow
def test_both_losses_fall_when_overfitting_a_few_images(tmp_path):
    """Learning signal reaches both heads through the shared backbone."""
    torch.set_num_threads(1)
    dm = _demo(tmp_path, num_train=8, loader=LoaderOptions(batch_size=8), augmentation="none")
    task = MultiTaskTask(
        **SMALL,
        loss=MultiBoxLossOptions(min_negatives=3),
        optimizer=lambda params: torch.optim.AdamW(params, lr=0.004),
    )
    dm.prepare_data()
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    losses = []
    optimizer = task.configure_optimizers()
    task.train()
    for _ in range(40):
        outputs = task.model.forward_outputs(images)
        det = task.model.compute_loss(outputs, targets)["loss"]
        seg = task._seg_loss(outputs["seg_logits"], task._masks(targets, images.shape[-2:]))
        optimizer.zero_grad()
        task.combine(det, seg).backward()
        optimizer.step()
        losses.append((float(det), float(seg)))
    (det0, seg0), (det1, seg1) = losses[0], losses[-1]
    assert det1 < 0.5 * det0 and seg1 < 0.5 * seg0, losses[::10]


def test_channels_last_training_is_the_same_function(tmp_path):
    """The opt-in changes only the memory layout: the network sees NHWC images and, in
    float64, computes the same loss and gradients."""
    dm = _demo(tmp_path, loader=LoaderOptions(batch_size=2))
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    targets = [{k: v.double() if v.is_floating_point() else v for k, v in t.items()}
               for t in targets]  # fmt: skip

    def step(channels_last: bool) -> tuple[Tensor, Tensor, list[bool]]:
        torch.manual_seed(0)
        task = MultiTaskTask(**SMALL, channels_last=channels_last).double()
        seen: list[bool] = []
        task.model.backbone.features[0][0].register_forward_pre_hook(
            lambda _, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
        )
        loss = task.training_step((images.double(), targets), 0)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in task.parameters() if p.grad is not None])
        return loss.detach(), grads, seen

    loss, grads, seen = step(False)
    loss_cl, grads_cl, seen_cl = step(True)
    assert seen == [False] and seen_cl == [True]
    torch.testing.assert_close(loss_cl, loss, rtol=1e-10, atol=0.0)
    assert ((grads_cl - grads).norm() / grads.norm()).item() < 1e-10
