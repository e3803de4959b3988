"""Learning on real photos: a short fine-tune of SSDLite on the raccoon set, from the real
TF-slim ImageNet backbone, lowers the loss and lifts AP on the real validation photos above
the same model untrained. Small image size and few steps: a smoke test of the recipe's
ingredients (real JPEGs of many sizes, greyscale ones, reduced decoding, TF weights), not
of its accuracy (``python -m benchmarks.finetune`` measures that)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from heads import MultiBoxLossOptions, PostprocessOptions
from tasks import COCODataModule, DetectionTask
from tasks.data.base import LoaderOptions
from tests.tasks.tf_files import QUANT_CLASSIFIER, need

RACCOON = Path(__file__).resolve().parents[2].parent / "shared" / "real-data" / "raccoon"


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _imagenet_backbone(tmp_path: Path) -> Path:
    """The coral 8-bit ImageNet classifier converted, its ``features`` saved as a
    torchvision-style backbone state dict (what ``weights_backbone`` takes as a file)."""
    pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
    from heads import get_model_builder
    from heads.tf_import import convert_file

    classifier, _ = convert_file(need(QUANT_CLASSIFIER), builders=get_model_builder)
    state = {k[len("backbone.") :]: v for k, v in classifier.state_dict().items()}
    path = tmp_path / "imagenet_tf_8bit_backbone.pt"
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    return path


@pytest.mark.slow
def test_short_finetune_on_real_photos_learns(tmp_path: Path) -> None:
    if not (RACCOON / "annotations" / "instances_train.json").is_file():
        pytest.skip(f"real photo set not found: {RACCOON} (see ../shared/real-data/README.md)")
    backbone = _imagenet_backbone(tmp_path)
    size = 160
    pl.seed_everything(0)
    task = DetectionTask(
        num_classes=1, image_size=size, weights_backbone=str(backbone), padding="tf",
        frozen_stages=4, loss=MultiBoxLossOptions(min_negatives=3),
        postprocess=PostprocessOptions(nms_iou=0.6),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=4e-5),
    )  # fmt: skip
    data = COCODataModule(
        str(RACCOON), "train", "val", image_size=size, augmentation="flip",
        loader=LoaderOptions(batch_size=16, eval_batch_size=20),
    )  # fmt: skip
    losses = _Losses()
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=24, limit_val_batches=1.0, num_sanity_val_steps=0,
        check_val_every_n_epoch=100, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
        default_root_dir=tmp_path,
    )  # fmt: skip
    before = trainer.validate(task, datamodule=data, verbose=False)[0]
    trainer.fit(task, datamodule=data)
    after = trainer.validate(task, datamodule=data, verbose=False)[0]
    first, last = sum(losses.losses[:4]) / 4, sum(losses.losses[-4:]) / 4
    print(f"loss {first:.2f} -> {last:.2f}; val AP50 {before['val/map_50']:.3f} -> "
          f"{after['val/map_50']:.3f}, AP {before['val/map']:.3f} -> {after['val/map']:.3f}")  # fmt: skip
    assert len(losses.losses) == 24
    assert last < 0.8 * first
    assert after["val/map_50"] > before["val/map_50"] + 0.05
    assert after["val/map"] > before["val/map"]
