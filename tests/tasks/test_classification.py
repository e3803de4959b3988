"""Classification task, ImageFolder data, demo set and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from tasks import ClassificationTask, DemoClassificationDataModule, ImageFolderDataModule
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.demo.classification import make_classification_demo

CONFIGS = Path(__file__).parents[2] / "configs"


def _write_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 3
) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                    root / split / name / f"{i}.jpg"
                )


def test_imagefolder_shapes_and_labels(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=32, resize_size=36, loader=LoaderOptions(batch_size=4)
    )
    dm.setup("fit")
    assert dm.num_classes == 2 and dm.val_set.classes == ["cat", "dog"]
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 1]
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32)


def test_imagefolder_names_the_missing_folder(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(tmp_path / "imagenet"))
    with pytest.raises(FileNotFoundError, match="imagenet/train with one sub-folder per class"):
        dm.setup("fit")


def test_demo_set_is_deterministic(tmp_path: Path) -> None:
    make_classification_demo(tmp_path / "a", 3, 2, 1, 48, seed=5)
    make_classification_demo(tmp_path / "b", 3, 2, 1, 48, seed=5)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 9
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_demo_module_generates_once(tmp_path: Path) -> None:
    dm = DemoClassificationDataModule(
        root=str(tmp_path / "demo"), train_per_class=2, val_per_class=1
    )
    dm.prepare_data()
    stamp = (tmp_path / "demo" / "train" / "circle" / "0000.jpg").stat().st_mtime_ns
    dm.prepare_data()
    assert (tmp_path / "demo" / "train" / "circle" / "0000.jpg").stat().st_mtime_ns == stamp
    other = DemoClassificationDataModule(root=str(tmp_path / "demo"), train_per_class=3)
    with pytest.raises(FileExistsError, match="made with other settings"):
        other.prepare_data()


def test_task_step_and_checkpoint_hparams(tmp_path: Path) -> None:
    task = ClassificationTask(num_classes=3, width_mult=0.35, label_smoothing=0.1)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    loss = task.training_step((images, labels), 0)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert task.hparams["num_classes"] == 3 and "optimizer" not in task.hparams
    trainer = Trainer(logger=False, enable_checkpointing=False, max_epochs=0)
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "t.ckpt")
    ckpt = torch.load(tmp_path / "t.ckpt", weights_only=True)  # plain values only
    restored = ClassificationTask.load_from_checkpoint(tmp_path / "t.ckpt", weights_only=True)
    assert (
        restored.hparams["label_smoothing"] == 0.1
        and ckpt["hyper_parameters"]["width_mult"] == 0.35
    )


def test_num_classes_must_match_data(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    trainer = Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False)
    dm = ImageFolderDataModule(
        str(tmp_path), image_size=32, resize_size=36, loader=LoaderOptions(batch_size=2)
    )
    with pytest.raises(ValueError, match="model.num_classes=5 but the data has 2 classes"):
        trainer.fit(ClassificationTask(num_classes=5, width_mult=0.35), dm)


@pytest.mark.parametrize(
    "config", ["classification_demo_mobilenetv2.yaml", "classification_imagenet_mobilenetv2.yaml"]
)
def test_config_runs_through_the_cli(config: str, tmp_path: Path) -> None:
    """Every classification config, through the real CLI on small generated data."""
    args = ["fit", "-c", str(CONFIGS / config), "--trainer.fast_dev_run=2",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.num_nodes=1",
            "--trainer.strategy=auto", "--trainer.sync_batchnorm=false",
            f"--trainer.default_root_dir={tmp_path}", "--data.init_args.loader.batch_size=2",
            "--data.init_args.loader.num_workers=0"]  # fmt: skip
    if "imagenet" in config:
        make_classification_demo(tmp_path / "imagenet", 3, 2, 2, 40, seed=0)
        args += [f"--data.init_args.root={tmp_path / 'imagenet'}", "--model.init_args.num_classes=3",
                 "--data.init_args.image_size=32", "--data.init_args.resize_size=36",
                 "--model.init_args.weights=null"]  # fmt: skip
    else:
        args += [f"--data.init_args.root={tmp_path / 'demo'}", "--data.init_args.train_per_class=2",
                 "--data.init_args.val_per_class=2"]  # fmt: skip
    cli_main(args)


def test_cli_rejects_unknown_config_key(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", "-c", str(CONFIGS / "classification_demo_mobilenetv2.yaml"),
                  "--model.init_args.num_clases=4"])  # fmt: skip
    assert "num_clases" in capsys.readouterr().err


def test_predict_writes_top5_csv(tmp_path: Path) -> None:
    out = tmp_path / "pred"
    cli_main(["predict", "-c", str(CONFIGS / "classification_demo_mobilenetv2.yaml"),
              f"--data.init_args.root={tmp_path / 'demo'}", "--data.init_args.train_per_class=1",
              "--data.init_args.val_per_class=1", f"--data.init_args.predict_dir={tmp_path / 'demo' / 'val'}",
              "--trainer.logger=false", f"--trainer.callbacks.output_dir={out}"])  # fmt: skip
    rows = (out / "predictions.csv").read_text().strip().splitlines()
    assert rows[0] == "path,top1,top2,top3,top4"
    assert len(rows) == 5
    first = rows[1].split(",")
    assert first[0].endswith("circle/0000.jpg")
    scores = [float(c.split(":")[1]) for c in first[1:]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-3
    assert {c.split(":")[0] for c in first[1:]} == {"circle", "square", "triangle", "diamond"}
