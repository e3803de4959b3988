"""Joint data: COCO masks rendered from polygons / RLE with the overlap and crowd rules,
Cityscapes boxes from instance ids with train-id masks, masks moving with the boxes."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.cityscapes_joint import (
    CityscapesJointDataModule,
    CityscapesJointDataset,
    boxes_from_instance_ids,
    cityscapes_triplets,
)
from tasks.data.coco_joint import COCOJointDataModule, semantic_mask
from tasks.data.demo.multitask import make_multitask_demo
from tasks.data.io import BadSampleError
from tasks.data.ssd_transforms import RandomZoomOut, bbox_params

CONFIGS = Path(__file__).parents[2] / "configs"


def test_semantic_mask_polygon_rle_overlap_and_crowd():
    big = {"category_id": 5, "bbox": [0, 0, 8, 8], "segmentation": [[0, 0, 8, 0, 8, 8, 0, 8]]}
    small_mask = np.zeros((10, 10), dtype=np.uint8)
    small_mask[2:5, 2:5] = 1
    rle = mask_utils.encode(np.asfortranarray(small_mask))
    small = {
        "category_id": 9,
        "bbox": [2, 2, 3, 3],
        "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
    }
    crowd = {
        "category_id": 5,
        "bbox": [6, 6, 4, 4],
        "iscrowd": 1,
        "segmentation": mask_utils.encode(
            np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((6, 0), (6, 0))))
        ),
    }
    label_of = {5: 0, 9: 1}
    # the small object is listed first but still painted over the big one
    out = semantic_mask([small, big, crowd], label_of, 10, 10)
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[0:8, 0:8] = 1
    expected[2:5, 2:5] = 2
    expected[6:10, 6:10] = np.where(expected[6:10, 6:10] > 0, expected[6:10, 6:10], 255)
    np.testing.assert_array_equal(out, expected)
    no_seg = {"category_id": 9, "bbox": [1, 1, 2, 3]}
    box_only = semantic_mask([no_seg], label_of, 6, 6)
    assert box_only[1:4, 1:3].tolist() == [[2, 2]] * 3 and box_only.sum() == 12


def test_coco_joint_masks_follow_the_augmentation(tmp_path):
    make_multitask_demo(tmp_path, 6, 8, 3, 64, 3, 0.25, 0.5, seed=3)
    dm = COCOJointDataModule(
        str(tmp_path),
        "train",
        "val",
        image_size=96,
        augmentation="ssd",
        loader=LoaderOptions(batch_size=4),
    )
    dm.setup("fit")
    assert (dm.num_seg_classes, dm.seg_class_names[:2]) == (7, ["background", "circle"])
    for i in range(8):
        _, t = dm._datasets["train"][i]
        assert t["mask"].shape == (96, 96)
        # every box holds mask pixels of its own class (box and mask moved together)
        for box, label in zip(
            t["boxes"].round().long().tolist(), t["labels"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            if (x2 - x1) * (y2 - y1) >= 16:
                assert (t["mask"][y1:y2, x1:x2] == label + 1).any()
    _, t = dm._datasets["validate"][0]
    assert t["mask"].shape == (64, 64)  # evaluation masks stay at the size on disk


def _write_cityscapes_joint(root: Path, counts: dict[str, int], size=(48, 96)) -> None:
    """Road everywhere, sky on top, a car (26001), two persons (24000, 24001), a cargroup
    (26, crowd) and a caravan (29000, not evaluated)."""
    h, w = size
    for split, count in counts.items():
        for i in range(count):
            city = "aachen"
            stem = f"{city}_{i:06d}_000019"
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            labels = np.full(size, 7, dtype=np.uint8)
            inst = np.full(size, 7, dtype=np.int32)
            labels[:10], inst[:10] = 23, 23
            for value, (y1, y2, x1, x2) in (
                (26001, (20, 30, 10 + i, 30 + i)),
                (24000, (12, 40, 40, 46)),
                (24001, (12, 40, 50, 55)),
                (26, (30, 40, 60, 70)),
                (29000, (30, 40, 80, 90)),
            ):
                label_id = value // 1000 if value >= 1000 else value
                labels[y1:y2, x1:x2], inst[y1:y2, x1:x2] = label_id, value
            image = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            )
            gt = root / "gtFine" / split / city
            Image.fromarray(labels).save(gt / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(inst.astype(np.uint16)).save(gt / f"{stem}_gtFine_instanceIds.png")


def test_cityscapes_boxes_from_instance_ids(tmp_path):
    _write_cityscapes_joint(tmp_path, {"val": 1})
    _, _, inst = cityscapes_triplets(tmp_path, "val")[0]
    obj = boxes_from_instance_ids(np.asarray(Image.open(inst)))
    rows = sorted(
        zip(obj["labels"].tolist(), obj["boxes"].tolist(), obj["crowd"].tolist(), strict=True)
    )
    assert rows == [
        (0, [40.0, 12.0, 46.0, 40.0], False),  # person 0
        (0, [50.0, 12.0, 55.0, 40.0], False),  # person 1
        (2, [10.0, 20.0, 30.0, 30.0], False),  # car
        (2, [60.0, 30.0, 70.0, 40.0], True),  # cargroup -> crowd
    ]  # the caravan gives no box


def test_cityscapes_joint_targets_ground_truth_and_void_canvas(tmp_path):
    _write_cityscapes_joint(tmp_path, {"train": 2, "val": 2})
    dm = CityscapesJointDataModule(
        str(tmp_path), image_size=64, augmentation="none", loader=LoaderOptions(batch_size=2)
    )
    dm.setup("fit")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 64, 64)
    t = targets[0]
    assert t["mask"].shape == (48, 96)
    assert set(t["mask"].unique().tolist()) == {0, 10, 11, 13, 255}  # road sky person car void
    assert sorted(t["labels"].tolist()) == [0, 0, 2]  # crowd not a training target
    gt = dm.ground_truth("validate")
    assert len(gt["images"]) == 2 and [c["name"] for c in gt["categories"]][:3] == [
        "person",
        "rider",
        "car",
    ]
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 2
    # the zoom-out canvas is void in the mask, not road (train id 0)
    triplets = cityscapes_triplets(tmp_path, "train")
    zoom = A.Compose([RandomZoomOut(2.0, p=1.0)], bbox_params=bbox_params())
    ds = CityscapesJointDataset(triplets, zoom)
    torch.manual_seed(0)
    _, t = ds[0]
    mask = t["mask"]
    assert mask.shape[0] > 48 and (mask == 255).sum() > 0
    assert int((mask == 0).sum()) == int(
        (ds.__class__(triplets, zoom, eval_masks=True)[0][1]["mask"] == 0).sum()
    )


def test_cityscapes_and_coco_configs_through_the_cli(tmp_path):
    _write_cityscapes_joint(tmp_path / "cs", {"train": 2, "val": 2})
    coco = tmp_path / "coco"
    make_multitask_demo(coco, 6, 4, 2, 64, 3, 0.25, 0.5, seed=1)
    for name in ("train", "val"):
        (coco / name).rename(coco / f"{name}2017")
        (coco / "annotations" / f"instances_{name}.json").rename(
            coco / "annotations" / f"instances_{name}2017.json"
        )
    common = [
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.strategy=auto",
        "--trainer.sync_batchnorm=false", "--trainer.fast_dev_run=1",
        "--trainer.enable_progress_bar=false", "--model.init_args.weights_backbone=null",
        "--model.init_args.width_mult=0.35", "--data.init_args.loader.batch_size=2",
        "--data.init_args.loader.num_workers=0", "--data.init_args.loader.pin_memory=false",
    ]  # fmt: skip
    cli_main(
        [
            "fit", "-c", str(CONFIGS / "multitask_cityscapes_ssdlite_deeplabv3_mobilenetv2.yaml"),
            f"--data.init_args.root={tmp_path / 'cs'}", f"--trainer.default_root_dir={tmp_path / 'r1'}",
            "--model.init_args.image_size=64", "--data.init_args.image_size=64", *common,
        ]
    )  # fmt: skip
    cli_main(
        [
            "fit", "-c", str(CONFIGS / "multitask_coco_ssdlite_deeplabv3_mobilenetv2.yaml"),
            f"--data.init_args.root={coco}", f"--trainer.default_root_dir={tmp_path / 'r2'}",
            "--model.init_args.num_det_classes=6", "--model.init_args.num_seg_classes=7",
            "--model.init_args.image_size=64", "--data.init_args.image_size=64", *common,
        ]
    )  # fmt: skip
    assert json.loads((coco / "annotations" / "instances_val2017.json").read_text())["images"]


def test_bad_training_images_raise_by_name_or_are_skipped_and_counted(tmp_path):
    make_multitask_demo(tmp_path, 3, 8, 2, 64, 3, 0.25, 0.5, seed=2)
    (tmp_path / "train" / "000002.jpg").write_bytes(b"")
    Image.new("RGB", (32, 64)).save(tmp_path / "train" / "000005.jpg")  # size differs from JSON

    def batches(policy: str) -> tuple[int, int]:
        dm = COCOJointDataModule(
            str(tmp_path), "train", "val", image_size=64, augmentation="flip",
            loader=LoaderOptions(batch_size=4, on_bad_sample=policy),
        )  # fmt: skip
        dm.setup("fit")
        images = sum(b[0].shape[0] for b in dm.train_dataloader())
        return images, dm.skipped_samples

    with pytest.raises(BadSampleError, match=r"train/00000[25]\.jpg"):
        batches("raise")
    assert batches("skip") == (8, 2)
