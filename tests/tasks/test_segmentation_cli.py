"""Every segmentation config through the real ``mobilezoo`` CLI on generated data in the
dataset's native layout (``fit`` with fast_dev_run), and ``predict`` writing masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lightning.pytorch import LightningDataModule
from PIL import Image

from tasks.base import BaseTask
from tasks.cli.command import MobileZooCLI
from tests.tasks.test_segmentation_data import write_cityscapes, write_voc

CONFIGS = Path(__file__).parents[2] / "configs"
# GPU recipes run here on one CPU process, without downloads, at a tiny size.
CPU_OVERRIDES = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.strategy=auto",
    "--trainer.sync_batchnorm=false",
    "--trainer.fast_dev_run=1",
    "--trainer.enable_progress_bar=false",
    "--model.weights_backbone=null",
    "--model.width_mult=0.35",
    "--data.loader.num_workers=0",
    "--data.loader.pin_memory=false",
    "--data.loader.batch_size=2",
    "--data.loader.eval_batch_size=2",
]


def _run(args: list[str]) -> MobileZooCLI:
    return MobileZooCLI(
        BaseTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
    )


def _fit(config: str, tmp_path: Path, extra: list[str]) -> dict[str, float]:
    cli = _run(
        [
            "fit",
            "-c",
            str(CONFIGS / config),
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            *CPU_OVERRIDES,
            *extra,
        ]
    )
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items()}


def test_voc_config_fits_on_trainaug_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    splits = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003", "2007_000004"]}
    write_voc(tmp_path / "voc", splits, sbd_ids=["2008_000001", "2008_000002"])
    metrics = _fit(
        "segmentation_voc_deeplabv3_mobilenetv2.yaml",
        tmp_path,
        [f"--data.root={tmp_path / 'voc'}", "--data.crop_size=48"],
    )
    assert {"train/loss", "val/loss", "val/miou", "val/pixel_acc"} <= set(metrics)
    assert 0.0 <= metrics["val/miou"] <= 1.0


def test_cityscapes_config_fits_on_native_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_cityscapes(tmp_path / "cityscapes", {"train": 2, "val": 2})
    metrics = _fit(
        "segmentation_cityscapes_deeplabv3_mobilenetv2.yaml",
        tmp_path,
        [f"--data.root={tmp_path / 'cityscapes'}", "--data.crop_size=40"],
    )
    assert "val/miou" in metrics and "val/iou_road" in metrics


def test_demo_config_fits_and_predicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    small = [
        "--data.train_images=4",
        "--data.val_images=2",
        "--data.generated_size=48",
        "--data.crop_size=32",
    ]
    metrics = _fit("segmentation_demo_deeplabv3_mobilenetv2.yaml", tmp_path, small)
    assert "val/iou_background" in metrics
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(images / "one.jpg")
    _run(
        [
            "predict",
            "-c",
            str(CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml"),
            f"--data.predict_dir={images}",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
            "--trainer.enable_progress_bar=false",
            *small,
        ]
    )
    # no checkpoint given: the predict run gets a run folder of its own, next to fit's
    (out,) = (tmp_path / "run" / "lightning_logs").glob("version_*/predictions")
    with Image.open(out / "one.png") as png:
        assert png.mode == "P" and png.size == (56, 40)
        assert np.asarray(png).max() < 4
    assert (out / "one_overlay.jpg").is_file()


def test_wrong_config_key_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _run(
            [
                "fit",
                "-c",
                str(CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml"),
                "--model.output_strid=8",
            ]
        )
    assert "output_strid" in capsys.readouterr().err
