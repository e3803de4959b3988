"""Which weights the fine-tune benchmark starts each training code from: the configs'
own (what a user running the configs gets), or ``--weights-backbone`` for all."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import finetune

BALLOON = finetune.REAL / "balloon"
pytestmark = pytest.mark.skipif(not BALLOON.is_dir(), reason="needs ../shared/real-data")


def _args(weights_backbone: str = "") -> argparse.Namespace:
    return argparse.Namespace(
        weights_backbone=weights_backbone, seeds=[0, 1, 2], steps=0, seg_steps=0, workers=1
    )


def _weights_of(overrides: list[str]) -> list[str]:
    return [o.split("=", 1)[1] for o in overrides if "weights_backbone=" in o]


def test_detection_and_joint_start_from_their_configs_weights() -> None:
    assert finetune._start_weights(_args(), finetune.DET_CONFIG) == "voc_tf_8bit"
    runs = finetune.segmentation_runs(BALLOON, _args())
    assert list(runs) == [
        "DeepLab from voc_tf_8bit",
        "DeepLab from ImageNet",
        "joint SSDLite+DeepLab from voc_tf_8bit",
    ]
    config, overrides, seeds = runs["joint SSDLite+DeepLab from voc_tf_8bit"]
    assert config == finetune.JOINT_CONFIG and seeds == [0]
    assert _weights_of(overrides) == ["voc_tf_8bit"]
    assert "--model.init_args.num_det_classes=1" in overrides
    assert _weights_of(runs["DeepLab from ImageNet"][1]) == ["imagenet_tf_8bit"]
    assert runs["DeepLab from voc_tf_8bit"][2] == [0, 1, 2]


def test_weights_backbone_option_sets_every_run(tmp_path: Path) -> None:
    file = str(tmp_path / "backbone.pt")
    assert finetune._start_weights(_args(file), finetune.DET_CONFIG) == file
    runs = finetune.segmentation_runs(BALLOON, _args(file))
    assert _weights_of(runs[f"joint SSDLite+DeepLab from {file}"][1]) == [file]
    assert _weights_of(runs["DeepLab from ImageNet"][1]) == [file]
