"""The fine-tune config through the real CLI: COCO-format data with other classes, weights
of an 80-class detector; everything but the class outputs is loaded (and logged)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from heads import ssdlite_mobilenet_v2
from heads.pretrained import META_KEY
from tasks.cli.command import main as cli_main
from tests.tasks.test_coco_data import write_coco

CONFIG = Path(__file__).parents[2] / "configs" / "detection_finetune_ssdlite_mobilenetv2.yaml"


@pytest.mark.slow
def test_finetune_config_loads_coco_weights_into_a_3_class_detector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_coco(tmp_path / "mine", splits=("train", "val"), num_images=(4, 2))
    torch.manual_seed(0)
    coco = ssdlite_mobilenet_v2(num_classes=80, padding="tf")
    weights = tmp_path / "ssdlite_coco.pt"
    meta = {"builder": "ssdlite_mobilenet_v2", "architecture": {"padding": "tf"}}
    torch.save({"state_dict": coco.state_dict(), META_KEY: meta}, weights)
    with caplog.at_level(logging.WARNING, logger="mobilezoo"):
        cli_main(
            [
                "fit", "-c", str(CONFIG),
                f"--data.init_args.root={root}",
                f"--model.init_args.weights={weights}",
                "--model.init_args.weights_backbone=null",  # offline; weights has it all
                "--data.init_args.loader.batch_size=2",
                "--data.init_args.loader.num_workers=0",
                "--trainer.accelerator=cpu",
                "--trainer.fast_dev_run=1",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path / 'run'}",
            ]
        )  # fmt: skip
    assert "head.cls_predictors.0.1.weight (243, 576, 1, 1)->(12, 576, 1, 1)" in caplog.text


JOINT = CONFIG.parent / "multitask_finetune_ssdlite_deeplabv3_mobilenetv2.yaml"


@pytest.mark.slow
def test_joint_finetune_config_trains_boxes_and_masks_from_polygons(tmp_path: Path) -> None:
    from tests.tasks.test_coco_segmentation import write_polygon_coco

    root = write_polygon_coco(tmp_path / "set")
    args = [
        "-c", str(JOINT), f"--data.init_args.root={root}",
        "--model.init_args.weights_backbone=null",  # offline: the test downloads nothing
        "--model.init_args.width_mult=0.35", "--data.init_args.image_size=96",
        "--data.init_args.loader.batch_size=2", "--data.init_args.loader.num_workers=0",
        "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    cli_main([
        "fit", *args, "--trainer.max_steps=2", "--trainer.val_check_interval=2",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.save_dir={tmp_path / 'logs'}",
    ])  # fmt: skip
    rows = list(csv.DictReader(next((tmp_path / "logs").rglob("metrics.csv")).open()))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"val/map", "val/map_50", "val/miou", "val/iou_balloon"} <= logged
    best = next(tmp_path.rglob("*.ckpt"))
    hparams = torch.load(best, weights_only=True)["hyper_parameters"]
    assert (hparams["num_det_classes"], hparams["num_seg_classes"]) == (1, 2)
