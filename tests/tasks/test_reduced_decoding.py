"""Reduced JPEG decoding (``Image.draft``): the image is smaller, its boxes still line up.

Synthetic JPEGs with a white rectangle on black (its box known exactly) are decoded at
reduced size; the rectangle found in the decoded pixels must match the scaled box. The
real photo sets (``../shared/real-data``) add their greyscale and largest JPEGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.base import LoaderOptions
from tasks.data.coco import COCODataModule
from tasks.data.io import read_image, read_image_reduced, scale_boxes
from tasks.data.ssd_transforms import decode_min_side

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-data"
BOX = (412.0, 300.0, 1610.0, 1004.0)  # x1, y1, x2, y2 of the rectangle in a 2000x1400 photo


def _photo(mode: str = "RGB", size: tuple[int, int] = (2000, 1400)) -> Image.Image:
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    x1, y1, x2, y2 = (int(v) for v in BOX)
    pixels[y1:y2, x1:x2] = 255
    gray = Image.fromarray(pixels)
    return gray if mode == "L" else gray.convert(mode)


def _found_box(image: np.ndarray) -> np.ndarray:
    """Extent (x1, y1, x2, y2) of the bright pixels, edges at half intensity."""
    bright = image[..., 0] > 127
    ys, xs = np.nonzero(bright)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_large_jpeg_decodes_reduced_with_boxes_aligned(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "big.jpg"
    _photo(mode).save(path, quality=95)
    image, full = read_image_reduced(path, min_side=300)
    # 1400 // 300 = 4: a quarter of each side, the largest step keeping both sides >= 300
    assert full == (1400, 2000) and image.shape == (350, 500, 3) and image.dtype == np.uint8
    if mode == "L":  # greyscale stays greyscale in all three channels
        assert np.array_equal(image[..., 0], image[..., 2])
    box = scale_boxes(np.array([BOX], dtype=np.float32), image.shape[:2], full)[0]
    np.testing.assert_allclose(box, np.array(BOX) / 4)
    np.testing.assert_allclose(_found_box(image), box, atol=1.0)


def test_never_below_min_side_nor_above_full_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _photo().save(path, quality=95)
    assert read_image_reduced(path, min_side=1000)[0].shape[:2] == (1400, 2000)  # 1/2 < 1000
    assert read_image_reduced(path, min_side=600)[0].shape[:2] == (700, 1000)
    assert read_image_reduced(path, min_side=None)[0].shape[:2] == (1400, 2000)
    small = tmp_path / "small.jpg"
    _photo(size=(2000, 200)).save(small)  # short side below min_side: decoded in full
    assert read_image_reduced(small, min_side=300)[0].shape[:2] == (200, 2000)
    png = tmp_path / "big.png"  # no DCT scaling: full size
    _photo().save(png)
    assert read_image_reduced(png, min_side=300)[0].shape[:2] == (1400, 2000)


def test_exif_rotated_jpeg_reports_its_upright_size(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated by 90 degrees: portrait
    _photo().save(path, exif=exif)
    image, full = read_image_reduced(path, min_side=300)
    assert full == (2000, 1400) and image.shape[:2] == (500, 350)
    assert read_image(path).shape[:2] == (2000, 1400)


def test_decode_min_side_keeps_the_smallest_ssd_crop_at_full_detail() -> None:
    assert decode_min_side(300, None) == 300 and decode_min_side(300, "flip") == 300
    assert decode_min_side(300, "ssd") == 1000  # the min-IoU crop keeps down to 0.3 a side


def _coco_folder(root: Path, photos: dict[str, Image.Image]) -> Path:
    (root / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (root / split).mkdir()
        images, anns = [], []
        for i, (name, photo) in enumerate(photos.items(), start=1):
            photo.save(root / split / name, quality=95)
            images.append(
                {"id": i, "file_name": name, "width": photo.width, "height": photo.height}
            )
            x1, y1, x2, y2 = BOX
            anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})  # fmt: skip
        data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("reduced", [True, False])
def test_data_module_targets_line_up_with_pixels(tmp_path: Path, reduced: bool) -> None:
    root = _coco_folder(tmp_path / "set", {"a.jpg": _photo(), "g.jpg": _photo("L")})
    dm = COCODataModule(str(root), "train", "val", image_size=128, augmentation="none",
                        loader=LoaderOptions(batch_size=2), reduced_decoding=reduced)  # fmt: skip
    dm.setup("fit")
    for stage in ("train", "validate"):
        dataset = dm._datasets[stage]
        assert dataset.min_side == (128 if reduced else None)
        for index in range(len(dataset)):
            image, target = dataset[index]
            assert target["orig_size"].tolist() == [1400, 2000]  # scoring stays on disk size
            expected = np.array(BOX) * [128 / 2000, 128 / 1400, 128 / 2000, 128 / 1400]
            np.testing.assert_allclose(target["boxes"][0].numpy(), expected, atol=1e-3)
            pixels = image.permute(1, 2, 0).numpy() * 127.5 + 127.5  # [-1, 1] -> 0..255
            np.testing.assert_allclose(_found_box(pixels), expected, atol=1.0)


def _real_images(name: str) -> list[tuple[Path, dict, list[list[float]]]]:
    ann_path = REAL / name / "annotations" / "instances_train.json"
    if not ann_path.is_file():
        pytest.skip(f"real photo set not found: {ann_path} (see ../shared/real-data/README.md)")
    data = json.loads(ann_path.read_text())
    boxes: dict[int, list[list[float]]] = {}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
    return [(REAL / name / "train" / im["file_name"], im, boxes[im["id"]]) for im in data["images"]]


def test_real_greyscale_and_largest_jpegs_read_reduced_and_aligned() -> None:
    """The raccoon set's greyscale JPEGs and its largest ones, read at reduced size for a
    300 px model: same content as the full decode resized, boxes scaled with it."""
    import cv2

    picked = []
    for path, info, boxes in _real_images("raccoon"):
        with Image.open(path) as img:
            if img.mode == "L" or img.width * img.height >= 1_500_000:
                picked.append((path, info, boxes, img.mode))
    assert any(mode == "L" for *_, mode in picked) and any(m != "L" for *_, m in picked)
    reduced_any = False
    for path, info, boxes, _ in picked:
        image, full = read_image_reduced(path, min_side=300)
        assert full == (info["height"], info["width"]) and image.shape[2] == 3
        assert min(image.shape[:2]) >= min(300, *full)
        reduced_any |= image.shape[:2] != full
        reference = cv2.resize(read_image(path), image.shape[1::-1], interpolation=cv2.INTER_AREA)
        # same picture: JPEG DCT scaling vs area averaging differ by a few grey levels
        assert np.abs(image.astype(int) - reference.astype(int)).mean() < 4
        scaled = scale_boxes(np.array(boxes, dtype=np.float32), image.shape[:2], full)
        ratio = np.array(image.shape[1::-1] * 2) / np.array(full[::-1] * 2)
        np.testing.assert_allclose(scaled, np.array(boxes) * ratio, rtol=1e-5)
        assert (scaled[:, 2] <= image.shape[1] + 1e-3).all()
        assert (scaled[:, 3] <= image.shape[0] + 1e-3).all()
    assert reduced_any
