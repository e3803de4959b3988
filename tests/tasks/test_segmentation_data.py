"""Segmentation data pieces: native-layout writers (shared by the other segmentation tests),
DeepLab augmentation, collation, palette and the generated demo set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.cityscapes import CITYSCAPES_LABELS
from tasks.data.demo.segmentation import DemoSegmentationDataModule, make_segmentation_demo
from tasks.data.seg_transforms import segmentation_transforms, voc_palette
from tasks.data.segmentation import SegmentationDataset, collate_segmentation
from tasks.data.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD


def _image_and_mask(
    rng: np.random.Generator, height: int, width: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A random image whose colour follows a blocky random label map (so it is learnable)."""
    mask = rng.integers(0, num_classes, (height // 8 + 1, width // 8 + 1)).astype(np.uint8)
    mask = np.kron(mask, np.ones((8, 8), dtype=np.uint8))[:height, :width]
    colours = rng.integers(0, 256, (num_classes, 3), dtype=np.uint8)
    image = colours[mask]
    return image, mask


def write_voc(
    root: Path,
    splits: dict[str, list[str]],
    sbd_ids: list[str] = (),
    num_classes: int = 21,
    seed: int = 0,
) -> Path:
    """A tiny ``VOCdevkit/VOC2012`` with JPEGs, palette masks (with void borders) and split
    lists; ``sbd_ids`` get masks in ``SegmentationClassAug`` (grayscale, as distributed)."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in (
        "JPEGImages",
        "SegmentationClass",
        "SegmentationClassAug",
        "ImageSets/Segmentation",
    ):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    every = sorted({i for ids in splits.values() for i in ids} | set(sbd_ids))
    for image_id in every:
        height, width = int(rng.integers(40, 72)), int(rng.integers(40, 72))
        image, mask = _image_and_mask(rng, height, width, num_classes)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        if image_id in sbd_ids:
            Image.fromarray(mask).save(voc / "SegmentationClassAug" / f"{image_id}.png")
        if any(image_id in ids for ids in splits.values()):
            voc_mask = mask.copy()
            voc_mask[0, :] = 255  # a void band, like VOC's object outlines
            png = Image.fromarray(voc_mask)
            png.putpalette(palette)
            png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for split, ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return voc


def write_cityscapes(
    root: Path, split_counts: dict[str, int], size: tuple[int, int] = (48, 96)
) -> None:
    """``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` + ``gtFine/..._gtFine_labelIds.png``
    holding raw label ids 0..33."""
    rng = np.random.default_rng(1)
    label_ids = np.array([label_id for label_id, _, _ in CITYSCAPES_LABELS], dtype=np.uint8)
    for split, count in split_counts.items():
        for i in range(count):
            city = ("aachen", "bremen")[i % 2]
            stem = f"{city}_{i:06d}_000019"
            image_dir = root / "leftImg8bit" / split / city
            mask_dir = root / "gtFine" / split / city
            image_dir.mkdir(parents=True, exist_ok=True)
            mask_dir.mkdir(parents=True, exist_ok=True)
            index_image, index_mask = _image_and_mask(rng, *size, len(label_ids))
            Image.fromarray(index_image).save(image_dir / f"{stem}_leftImg8bit.png")
            Image.fromarray(label_ids[index_mask]).save(mask_dir / f"{stem}_gtFine_labelIds.png")


# -- transforms ------------------------------------------------------------------------------
def test_train_transform_scales_pads_with_void_and_crops() -> None:
    rng = np.random.default_rng(0)
    image, mask = _image_and_mask(rng, 30, 40, 4)
    tf = segmentation_transforms(
        True, SYMMETRIC_MEAN, SYMMETRIC_STD, crop_size=64, min_scale=0.5, max_scale=1.0
    )
    for _ in range(5):
        out = tf(image=image, mask=mask)
        assert out["image"].shape == (64, 64, 3) and out["mask"].shape == (64, 64)
        values = set(np.unique(out["mask"]).tolist())
        # nearest neighbour only: no new label values; the padding is void
        assert values <= {0, 1, 2, 3, 255} and 255 in values
        padded = out["mask"] == 255
        # padded image pixels are 0, the mean colour after normalization
        assert np.allclose(out["image"][padded], 0.0)
        assert out["image"].min() >= -1.0 and out["image"].max() <= 1.0


def test_train_transform_keeps_image_and_mask_aligned() -> None:
    """The image encodes its label (colour = class), so any misalignment shows up."""
    colours = np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)
    mask = np.zeros((80, 80), dtype=np.uint8)
    mask[:, 50:] = 1
    image = colours[mask]
    tf = segmentation_transforms(
        True, SYMMETRIC_MEAN, SYMMETRIC_STD, crop_size=48, min_scale=0.7, max_scale=1.6
    )
    for seed in range(8):
        np.random.seed(seed)
        out = tf(image=image, mask=mask)
        labelled = out["mask"] != 255
        bright = out["image"][..., 0] > 0
        agree = (bright == (out["mask"] == 1))[labelled]
        assert agree.mean() > 0.97  # only bilinear edge pixels may differ


def test_eval_transform_is_full_image_normalization() -> None:
    image = np.full((33, 47, 3), 255, dtype=np.uint8)
    out = segmentation_transforms(False, SYMMETRIC_MEAN, SYMMETRIC_STD)(image=image)["image"]
    assert out.shape == (33, 47, 3) and np.allclose(out, 1.0)


def test_transform_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        segmentation_transforms(True, SYMMETRIC_MEAN, SYMMETRIC_STD, min_scale=2.0, max_scale=0.5)
    with pytest.raises(ValueError, match="crop_size"):
        segmentation_transforms(True, SYMMETRIC_MEAN, SYMMETRIC_STD, crop_size=0)


def test_collate_pads_with_void_and_records_sizes() -> None:
    samples = [
        {"image": torch.ones(3, 4, 6), "mask": torch.zeros(4, 6, dtype=torch.long), "path": "a"},
        {"image": torch.ones(3, 5, 3), "mask": torch.ones(5, 3, dtype=torch.long), "path": "b"},
    ]
    batch = collate_segmentation(samples)
    assert batch["image"].shape == (2, 3, 5, 6) and batch["mask"].shape == (2, 5, 6)
    assert batch["size"].tolist() == [[4, 6], [5, 3]] and batch["path"] == ["a", "b"]
    assert batch["image"][0, :, 4:].abs().sum() == 0 and (batch["mask"][0, 4:] == 255).all()
    assert (batch["mask"][1, :, 3:] == 255).all() and (batch["mask"][1, :, :3] == 1).all()


def test_voc_palette_known_colours() -> None:
    palette = np.array(voc_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[15].tolist() == [192, 128, 128]  # person
    assert palette[255].tolist() == [224, 224, 192]  # void


def test_dataset_rejects_size_mismatch_and_unknown_labels(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.zeros((10, 11), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((10, 12), 7, np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"a\.png: mask is 11x10 \(WxH\) but its image"):
        SegmentationDataset([(tmp_path / "a.jpg", tmp_path / "a.png")], None, 5)[0]
    with pytest.raises(ValueError, match=r"b\.png: label values \[7\] are neither a class"):
        SegmentationDataset([(tmp_path / "a.jpg", tmp_path / "b.png")], None, 5)[0]


# -- demo set ---------------------------------------------------------------------------------
def test_demo_set_is_voc_layout_and_deterministic(tmp_path: Path) -> None:
    make_segmentation_demo(tmp_path / "a", 5, 3, 2, 64, seed=3)
    make_segmentation_demo(tmp_path / "b", 5, 3, 2, 64, seed=3)
    voc = tmp_path / "a" / "VOCdevkit" / "VOC2012"
    assert (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split() == [
        "demo_00003",
        "demo_00004",
    ]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 12
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    with Image.open(voc / "SegmentationClass" / "demo_00000.png") as png:
        assert png.mode == "P"
        values = set(np.unique(np.asarray(png)).tolist())
    assert 0 in values and 255 in values and values <= {0, 1, 2, 3, 4, 255}


def test_demo_module_reads_generated_set() -> None:
    dm = DemoSegmentationDataModule(
        train_images=4,
        val_images=3,
        generated_size=48,
        crop_size=32,
        loader=LoaderOptions(batch_size=2),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 4 and dm.class_names[1] == "circle"
    assert len(dm.train_set) == 4 and len(dm.val_set) == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.int64
    val = next(iter(dm.val_dataloader()))
    assert val["image"].shape == (2, 3, 48, 48)
    with pytest.raises(ValueError, match="num_classes must be in 2..6, got 9"):
        DemoSegmentationDataModule(num_classes=9)
