"""COCO evaluation under 2-process DDP (gloo, CPU) equals one process.

The shards are uneven and one image is handed to both ranks, as a padded sampler would:
every image must be counted once.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from heads import PostprocessOptions
from tasks.data.base import LoaderOptions
from tasks.data.demo import SceneOptions
from tasks.metrics.coco import COCOEvaluator, evaluate_coco
from tests.tasks.test_coco_eval import make_ground_truth, make_results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gt = make_ground_truth(num_images=11)
        per_image: dict[int, list[dict]] = {i["id"]: [] for i in gt["images"]}
        for r in make_results(gt):
            per_image[r["image_id"]].append(r)
        ids = sorted(per_image)
        # rank 0: images 1-6, rank 1: images 7-11 and image 1 again (padding duplicate)
        mine = ids[:6] if rank == 0 else [*ids[6:], ids[0]]
        evaluator = COCOEvaluator(gt)
        for image_id in mine:  # one "batch" per image
            evaluator.update({image_id: per_image[image_id]})
        stats = evaluator.compute()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(stats, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_equals_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    gt = make_ground_truth(num_images=11)
    single = evaluate_coco(gt, make_results(gt))
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert stats == single, rank
    assert single["map"] > 0.05


@pytest.mark.slow
def test_detection_task_validate_ddp_spawn_equals_one_process(tmp_path):
    """The task end to end: 2 gloo processes with uneven shards give the 1-process numbers."""
    from lightning.pytorch import Trainer

    from tasks import DetectionTask
    from tasks.data.demo.detection import DemoDetectionDataModule

    def run(devices: int, eval_batch_size: int = 2) -> dict[str, float]:
        dm = DemoDetectionDataModule(
            root=str(tmp_path / "demo"), scene=SceneOptions(num_train=2, num_val=7, generated_size=64),
            image_size=64, loader=LoaderOptions(batch_size=2, eval_batch_size=eval_batch_size),
        )  # fmt: skip
        torch.manual_seed(0)
        task = DetectionTask(
            num_classes=3, width_mult=0.35, image_size=64,
            postprocess=PostprocessOptions(score_threshold=0.0, max_detections=300, nms_iou=0.9),
        )  # fmt: skip
        # Untrained, with zero box deltas the detections are the anchors with random
        # scores: non-zero COCO numbers that depend on every image.
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
    assert len(single) == 13 and single["val/mar_100"] > 0.02
    loss = single.pop("val/loss")
    assert double.pop("val/loss") == pytest.approx(loss, rel=1e-6)
    assert double == single
    # The loss is the set's, whatever the evaluation batch size.
    for size in (1, 3, 7):
        assert run(1, eval_batch_size=size)["val/loss"] == pytest.approx(loss, rel=1e-5), size
