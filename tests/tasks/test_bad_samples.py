"""Bad files met while training: a named error, or a counted skip when asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from tasks import ClassificationTask, ImageFolderDataModule
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.demo.classification import make_classification_demo
from tasks.data.io import BadSampleError, read_image
from tests.tasks.test_io import png_header_only

CONFIG = Path(__file__).parents[2] / "configs" / "classification_demo_mobilenetv2.yaml"


@pytest.fixture
def data_with_bad_files(tmp_path: Path) -> Path:
    make_classification_demo(tmp_path / "data", 2, 6, 1, 40, seed=0)
    (tmp_path / "data" / "train" / "circle" / "0002.jpg").write_bytes(b"")
    (tmp_path / "data" / "train" / "square" / "0004.jpg").write_text("not an image")
    return tmp_path / "data"


def _loader_batches(root: Path, policy: str, workers: int) -> tuple[int, int]:
    dm = ImageFolderDataModule(str(root), image_size=32, resize_size=36,
                               loader=LoaderOptions(batch_size=4, num_workers=workers,
                                                    on_bad_sample=policy))  # fmt: skip
    dm.setup("fit")
    images = sum(batch[0].shape[0] for batch in dm.train_dataloader())
    return images, dm.skipped_samples


def test_raise_names_the_file(data_with_bad_files: Path) -> None:
    with pytest.raises(BadSampleError, match=r"train/(circle/0002|square/0004)\.jpg: "):
        _loader_batches(data_with_bad_files, "raise", workers=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_and_keeps_batches_full(data_with_bad_files: Path, workers: int) -> None:
    images, skipped = _loader_batches(data_with_bad_files, "skip", workers)
    assert images == 12  # 12 files, 3 full batches: bad ones replaced, not dropped
    assert skipped == 2


def test_decompression_bomb_is_skipped_like_other_bad_files(data_with_bad_files: Path) -> None:
    bomb = data_with_bad_files / "train" / "square" / "0000.jpg"
    png_header_only(bomb, 100_000, 100_000)  # a PNG named .jpg: the header decides
    with pytest.raises(BadSampleError, match=r"square/0000\.jpg: .*decompression bomb"):
        read_image(bomb)
    images, skipped = _loader_batches(data_with_bad_files, "skip", workers=0)
    assert images == 12 and skipped == 3


def test_skipped_samples_are_logged_in_training(data_with_bad_files: Path) -> None:
    dm = ImageFolderDataModule(str(data_with_bad_files), image_size=32, resize_size=36,
                               loader=LoaderOptions(batch_size=4, on_bad_sample="skip"))  # fmt: skip
    trainer = Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(ClassificationTask(num_classes=2, width_mult=0.35), dm)
    assert trainer.callback_metrics["train/skipped_samples"] == 2


def test_bad_policy_value_is_rejected(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["fit", "-c", str(CONFIG), "--data.init_args.loader.on_bad_sample=ignore"])
    assert "on_bad_sample" in capsys.readouterr().err


def test_yaml_is_loaded_safely(tmp_path: Path, capsys) -> None:
    flag = tmp_path / "flag"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"seed_everything: !!python/object/apply:os.system ['touch {flag}']\n")
    with pytest.raises(SystemExit):
        cli_main(["fit", "-c", str(CONFIG), "-c", str(evil)])
    assert not flag.exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_cli_names_a_bad_file_in_one_line(tmp_path: Path, capsys, workers: int) -> None:
    """An unreadable image ends the command with one line naming it (exit 2), also when a
    DataLoader worker met it (its error then carries the worker's traceback)."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["predict", "-c", str(CONFIG), f"--trainer.default_root_dir={tmp_path / 'run'}",
                  f"--data.init_args.predict_dir={folder}",
                  f"--data.init_args.loader.num_workers={workers}",
                  "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1].startswith("mobilezoo: error: ") and "broken.jpg: not a readable image" in err[-1]
    )
    assert not any("Traceback" in line for line in err)
