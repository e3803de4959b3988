"""Weights through the real CLI: a converted file as ``weights_backbone`` of a detection
config trains; an unusable weights file is one line naming it, exit code 2."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tasks.cli.command import main as cli_main
from tests.tasks.tf_files import FLOAT_DEEPLAB, need

CONFIG = Path(__file__).parents[2] / "configs" / "detection_demo_ssdlite_mobilenetv2.yaml"


def _fit(tmp_path: Path, weights_backbone: Path) -> list[str]:
    return [
        "fit", "-c", str(CONFIG),
        f"--model.init_args.weights_backbone={weights_backbone}",
        "--data.init_args.scene.num_train=4", "--data.init_args.scene.num_val=2",
        "--data.init_args.loader.batch_size=2", "--trainer.accelerator=cpu",
        "--trainer.fast_dev_run=1", "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
    ]  # fmt: skip


def test_unusable_weights_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "backbone.pt"
    bad.write_bytes(b"not a torch file")
    err = io.StringIO()
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(err):
        cli_main(_fit(tmp_path, bad))
    assert info.value.code == 2
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "not a PyTorch zip archive" in lines[0]


def test_converted_deeplab_starts_a_detection_config(tmp_path: Path) -> None:
    """The width-0.5 TF DeepLab (no channel rounding, TF padding) as the backbone of the
    demo detector (width 0.5): ``divisible_by`` and ``padding`` follow the file."""
    from tasks.cli.weights import convert_main

    converted = tmp_path / "deeplab.pt"
    with contextlib.redirect_stdout(io.StringIO()):
        convert_main([str(need(FLOAT_DEEPLAB)), "--output", str(converted)])
    cli_main(_fit(tmp_path, converted))
