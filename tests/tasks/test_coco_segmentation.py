"""COCO polygons as semantic masks (``COCOSegmentationDataModule``) and the segmentation
fine-tune config through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions
from tasks.data.coco_segmentation import COCOSegmentationDataModule

CONFIG = Path(__file__).parents[2] / "configs" / "segmentation_finetune_deeplabv3_mobilenetv2.yaml"
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-data"


def write_polygon_coco(root: Path, num_images: int = 3, size: tuple[int, int] = (90, 70)) -> Path:
    """Photos (noise) with one square 'balloon' each, outlined by a polygon; one crowd."""
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        images, anns = [], []
        for i in range(1, num_images + 1):
            name = f"{split}_{i}.png"
            pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / name)
            images.append({"id": i, "file_name": name, "width": size[0], "height": size[1]})
            x, y = 10 + i, 20
            square = [x, y, x + 30, y, x + 30, y + 30, x, y + 30]
            anns.append({"id": 2 * i, "image_id": i, "category_id": 7, "segmentation": [square],
                         "bbox": [x, y, 30, 30], "area": 900, "iscrowd": 0})  # fmt: skip
            if i == 1:  # a crowd region: void where no object covers it
                crowd = [60, 0, 80, 0, 80, 10, 60, 10]
                anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 7, "iscrowd": 1,
                             "segmentation": [crowd], "bbox": [60, 0, 20, 10], "area": 200})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "balloon"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_polygons_become_the_semantic_mask(tmp_path: Path) -> None:
    root = write_polygon_coco(tmp_path / "set")
    dm = COCOSegmentationDataModule(str(root), crop_size=48,
                                    loader=LoaderOptions(batch_size=2))  # fmt: skip
    assert dm.class_names == ("background", "balloon") and dm.num_classes == 2
    dm.setup("fit")
    item = dm.val_set[0]  # evaluation: full image at its size on disk
    mask = item["mask"].numpy()
    assert mask.shape == (70, 90) and item["image"].shape == (3, 70, 90)
    expected = np.zeros((70, 90), dtype=np.int64)
    expected[0:10, 60:80] = 255
    expected[20:50, 11:41] = 1
    # pycocotools rasterizes polygon edges by pixel centres: the outline may differ by a pixel
    assert (mask != expected).sum() <= 2 * 30 + 2 * 20
    assert (mask[22:48, 13:39] == 1).all() and (mask[2:8, 62:78] == 255).all()
    assert mask[60:, :].max() == 0
    batch = next(iter(dm.train_dataloader()))  # training: crops with the mask moved along
    assert batch["image"].shape == (2, 3, 48, 48) and batch["mask"].shape == (2, 48, 48)
    assert set(np.unique(batch["mask"].numpy())) <= {0, 1, 255}


def test_real_balloon_masks_cover_their_polygons() -> None:
    ann = REAL / "balloon" / "annotations" / "instances_val.json"
    if not ann.is_file():
        pytest.skip(f"real photo set not found: {ann} (see ../shared/real-data/README.md)")
    dm = COCOSegmentationDataModule(str(REAL / "balloon"), loader=LoaderOptions(batch_size=16))
    dm.setup("validate")
    data = json.loads(ann.read_text())
    first = min(im["id"] for im in data["images"])
    area = sum(a["area"] for a in data["annotations"] if a["image_id"] == first)
    _, mask = dm.val_set.load(0)
    assert set(np.unique(mask)) == {0, 1}
    # union of the polygons: at most their summed area, most of it (balloons overlap little)
    assert 0.8 * area <= (mask == 1).sum() <= 1.02 * area


@pytest.mark.slow
def test_finetune_config_runs_through_the_cli(tmp_path: Path) -> None:
    root = write_polygon_coco(tmp_path / "set")
    cli_main(
        [
            "fit", "-c", str(CONFIG),
            f"--data.init_args.root={root}",
            "--model.init_args.weights=null",  # offline: the test downloads nothing
            "--model.init_args.width_mult=0.35",
            "--data.init_args.crop_size=64",
            "--data.init_args.loader.batch_size=2",
            "--data.init_args.loader.num_workers=0",
            "--trainer.accelerator=cpu",
            "--trainer.fast_dev_run=1",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ]
    )  # fmt: skip
