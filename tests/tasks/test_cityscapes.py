"""Cityscapes: the label id -> train id table and the data module on the native layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELS,
    LABEL_ID_TO_TRAIN_ID,
    CityscapesDataModule,
    cityscapes_palette,
)
from tests.tasks.test_segmentation_data import write_cityscapes


def test_label_table_matches_cityscapes_scripts() -> None:
    assert [label_id for label_id, _, _ in CITYSCAPES_LABELS] == list(range(34))
    # the 19 evaluated classes, in train-id order
    assert CITYSCAPES_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle",
    )  # fmt: skip
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
    for label_id in range(256):
        assert LABEL_ID_TO_TRAIN_ID[label_id] == expected.get(label_id, 255), label_id
    assert LABEL_ID_TO_TRAIN_ID.dtype == np.uint8
    palette = cityscapes_palette()
    assert len(palette) == 768 and palette[:3] == [128, 64, 128]  # road


def test_reads_label_ids_as_train_ids(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, {"train": 3, "val": 2})
    dm = CityscapesDataModule(str(tmp_path), crop_size=(32, 48), loader=LoaderOptions(batch_size=2))
    dm.setup("fit")
    assert dm.num_classes == 19 and len(dm.train_set) == 3 and len(dm.val_set) == 2
    image_path, mask_path = dm.val_set.samples[0]
    assert mask_path.name == image_path.name.replace("leftImg8bit", "gtFine_labelIds")
    with Image.open(mask_path) as png:
        raw = np.asarray(png)
    sample = dm.val_set[0]
    assert np.array_equal(sample["mask"].numpy(), LABEL_ID_TO_TRAIN_ID[raw].astype(np.int64))
    values = set(np.unique(sample["mask"].numpy()).tolist())
    assert values <= set(range(19)) | {255} and 255 in values and len(values) > 5
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 48)


def test_missing_layout_and_masks_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train/<city>/"):
        CityscapesDataModule(str(tmp_path)).setup("fit")
    write_cityscapes(tmp_path, {"train": 2, "val": 1})
    next((tmp_path / "gtFine" / "val").rglob("*_labelIds.png")).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 1 images of split 'val' have no mask"):
        CityscapesDataModule(str(tmp_path)).setup("validate")
