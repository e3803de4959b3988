"""The evaluation path on a real photo with real weights: ``mobilezoo validate`` of the
8-bit TF DeepLab (``voc_tf_8bit``) on the bird photo, read from a VOC-layout folder by
``VOCSegmentationDataModule``, scores the same IoU as the TF Lite runtime's own output.

The runtime gets exactly the pixels the data module reads (the JPEG written here, decoded
by ``tasks.data.io``) and the network's input scaling ((x - 128) / 128, set through the
data module's mean and std); both are scored on the same VOC mask.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from heads.pretrained import get_weights
from tasks.cli.command import main as cli_main
from tasks.data.io import read_image
from tests.tasks.tf_files import BIRD_MASK, QUANT_DEEPLAB, TF_WEIGHTS, need

CONFIG = Path(__file__).parents[2] / "configs" / "segmentation_voc_deeplabv3_mobilenetv2.yaml"
BIRD = 3
Q = 128 / 255  # the 8-bit input's (x - 128) / 128 in the data module's 0..1 units


def _voc_folder(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    with Image.open(need(TF_WEIGHTS / "photos" / "bird_segmentation.bmp")) as photo:
        photo.convert("RGB").save(voc / "JPEGImages" / "bird.jpg", quality=100)
    with Image.open(need(BIRD_MASK)) as mask:
        mask.convert("L").save(voc / "SegmentationClass" / "bird.png")
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("bird\n")
    return voc


def _iou(pred: np.ndarray, mask: np.ndarray, cls: int) -> float:
    valid = mask != 255
    inter = np.logical_and(pred == cls, mask == cls)[valid].sum()
    union = np.logical_or(pred == cls, mask == cls)[valid].sum()
    return float(inter / union)


@pytest.mark.slow
def test_cli_validate_of_voc_tf_8bit_matches_the_tflite_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="no TF Lite runtime")
    voc = _voc_folder(tmp_path / "data")
    # Offline: the entry's source file where the download would put it (sha256 checked),
    # converted on first use, as on a user's machine.
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        entry = get_weights("deeplabv3_mobilenet_v2", "voc_tf_8bit")
        entry.download_path.parent.mkdir(parents=True)
        shutil.copy(need(QUANT_DEEPLAB), entry.download_path)
        monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
        cli_main(
            [
                "validate", "-c", str(CONFIG),
                f"--data.init_args.root={tmp_path / 'data'}",
                "--data.init_args.sbd=false",
                "--data.init_args.loader.num_workers=0",
                "--data.init_args.loader.eval_batch_size=1",
                f"--data.init_args.mean=[{Q}, {Q}, {Q}]",
                f"--data.init_args.std=[{Q}, {Q}, {Q}]",
                "--model.init_args.weights=voc_tf_8bit",
                "--model.init_args.weights_backbone=null",
                "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
                "--trainer.sync_batchnorm=false", "--trainer.callbacks=null",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                f"--trainer.logger.save_dir={tmp_path / 'run'}",
                f"--trainer.default_root_dir={tmp_path / 'run'}",
            ]
        )  # fmt: skip
    finally:
        torch.hub.set_dir(previous)
    rows = list(csv.DictReader(next((tmp_path / "run").rglob("metrics.csv")).open()))
    ours = {k: float(v) for k, v in rows[-1].items() if k.startswith("val/iou_") and v}

    image = read_image(voc / "JPEGImages" / "bird.jpg")  # the pixels the data module read
    interpreter = litert.Interpreter(model_path=str(QUANT_DEEPLAB), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    runtime = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
    mask = np.asarray(Image.open(voc / "SegmentationClass" / "bird.png"))
    reference = {"background": _iou(runtime, mask, 0), "bird": _iou(runtime, mask, BIRD)}
    print(f"IoU through the CLI {ours}; TF Lite runtime {reference}")
    assert reference["bird"] > 0.8  # the real weights segment the real bird
    for name, value in reference.items():
        assert abs(ours[f"val/iou_{name}"] - value) < 0.005, (name, ours, reference)


def _no_download(url: str, *args: object, **kwargs: object) -> None:
    raise AssertionError(f"the test must not download ({url})")
