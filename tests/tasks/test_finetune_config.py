"""The fine-tune config through the real CLI: COCO-format data with other classes, weights
of an 80-class detector; everything but the class outputs is loaded (and logged)."""

from __future__ import annotations

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
