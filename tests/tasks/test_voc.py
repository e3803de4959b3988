"""PASCAL VOC 2012 / SBD trainaug data module on tiny sets in the native layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.voc import VOC_CLASSES, VOCSegmentationDataModule, read_id_list
from tests.tasks.test_segmentation_data import write_voc

SPLITS = {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003", "2008_000004"]}


def test_reads_palette_pngs_as_class_indices(tmp_path: Path) -> None:
    voc = write_voc(tmp_path, SPLITS)
    dm = VOCSegmentationDataModule(str(tmp_path), crop_size=32, loader=LoaderOptions(batch_size=2))
    dm.setup("fit")
    assert dm.num_classes == 21 and dm.class_names == VOC_CLASSES
    assert [p[0].stem for p in dm.val_set.samples] == SPLITS["val"]
    sample = dm.val_set[0]
    with Image.open(voc / "SegmentationClass" / "2007_000003.png") as png:
        assert png.mode == "P"  # the palette indices, not the colours, are the labels
        expected = np.asarray(png)
    assert sample["mask"].shape == expected.shape
    assert torch.equal(sample["mask"], torch.from_numpy(expected.copy()).long())
    assert (sample["mask"][0] == 255).all()  # the void band is kept for the evaluator
    assert sample["image"].shape == (3, *expected.shape)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].shape == (2, 32, 32)


def test_root_may_be_the_voc2012_folder(tmp_path: Path) -> None:
    voc = write_voc(tmp_path, SPLITS)
    dm = VOCSegmentationDataModule(str(voc))
    assert len(dm.samples("train")) == 2


def test_trainaug_adds_sbd_without_val_images(tmp_path: Path) -> None:
    sbd = ["2008_000010", "2008_000011", "2007_000003"]  # the last one is a VOC val image
    voc = write_voc(tmp_path, SPLITS, sbd_ids=sbd)
    dm = VOCSegmentationDataModule(str(tmp_path), sbd=True)
    ids = dm.trainaug_ids()
    assert ids == ["2007_000001", "2007_000002", "2008_000010", "2008_000011"]
    pairs = dict((img.stem, mask) for img, mask in dm.samples("train"))
    assert pairs["2008_000010"] == voc / "SegmentationClassAug" / "2008_000010.png"
    assert pairs["2007_000001"] == voc / "SegmentationClass" / "2007_000001.png"
    # a list file in the "image mask" format restricts the SBD part
    listing = tmp_path / "train_aug.txt"
    listing.write_text("/JPEGImages/2008_000011.jpg /SegmentationClassAug/2008_000011.png\n")
    dm = VOCSegmentationDataModule(str(tmp_path), sbd=True, sbd_list=str(listing))
    assert dm.trainaug_ids() == ["2007_000001", "2007_000002", "2008_000011"]
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 2


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="VOCdevkit/VOC2012/JPEGImages"):
        VOCSegmentationDataModule(str(tmp_path)).setup("fit")
    voc = write_voc(tmp_path, SPLITS)
    (voc / "SegmentationClass" / "2007_000002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 2 samples .*2007_000002\.png"):
        VOCSegmentationDataModule(str(tmp_path)).setup("fit")
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug"):
        VOCSegmentationDataModule(str(tmp_path), sbd=True, sbd_dir=str(tmp_path / "nope")).setup(
            "fit"
        )
    with pytest.raises(FileNotFoundError, match="split list not found: .*trainval_x.txt"):
        VOCSegmentationDataModule(str(tmp_path), val_split="trainval_x").setup("validate")


def test_corrupt_image_and_bad_mask_values_name_the_file(tmp_path: Path) -> None:
    voc = write_voc(tmp_path, SPLITS)
    (voc / "JPEGImages" / "2007_000003.jpg").write_bytes(b"not a jpeg")
    with Image.open(voc / "JPEGImages" / "2008_000004.jpg") as jpg:
        size = jpg.size[::-1]
    Image.fromarray(np.full(size, 40, np.uint8)).save(voc / "SegmentationClass" / "2008_000004.png")
    dm = VOCSegmentationDataModule(str(tmp_path))
    dm.setup("validate")
    with pytest.raises(ValueError, match=r"2007_000003\.jpg: not a readable image"):
        dm.val_set[0]
    with pytest.raises(ValueError, match=r"2008_000004\.png: .*\[40\] are neither a class"):
        dm.val_set[1]


def test_read_id_list_formats(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(
        "a\n\nb SegmentationClass/b.png\n/JPEGImages/d.jpg /SegmentationClassAug/d.png\n"
    )
    assert read_id_list(path) == ["a", "b", "d"]
    path.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_id_list(path)
