"""Fuzzing the readers with hostile annotation files and data trees (seeded).

Every generated input must give a correct load, a documented skip or repair, or one of the
project's one-line errors (``AnnotationError``, ``BadSampleError``; ``FileNotFoundError``
for a missing split folder or file), never another exception, and each input must finish
in bounded time and memory. The readers' set-up runs on each input, then one
``__getitem__`` per sample.

The default run tries a few dozen inputs of each kind (a few seconds); set
``MOBILEZOO_FUZZ_EXAMPLES=N`` for ``N`` inputs of each kind.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import re
import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tasks.data.base import LoaderOptions
from tasks.data.cityscapes import CityscapesDataModule
from tasks.data.cityscapes_joint import CityscapesJointDataModule
from tasks.data.coco import COCOAnnotations, COCODetectionDataset
from tasks.data.coco_joint import COCOJointDataset
from tasks.data.io import BadSampleError
from tasks.data.ssd_transforms import ssd_eval_transforms, ssd_train_transforms
from tasks.data.validate import AnnotationError
from tasks.data.voc import VOCSegmentationDataModule
from tests.tasks.test_segmentation_data import write_cityscapes, write_voc

EXAMPLES = int(os.environ.get("MOBILEZOO_FUZZ_EXAMPLES", "0") or 0)
#: the one-line errors an input may end in
EXPECTED = (AnnotationError, BadSampleError, FileNotFoundError)
#: generous bounds: a correct reader takes milliseconds and megabytes per input
MAX_SECONDS = 30.0
MAX_GROWTH_MB = 1500

MEAN = STD = (0.5, 0.5, 0.5)


def _count(default: int) -> int:
    return EXAMPLES or default


def _run(name: str, inputs: int, make: Callable[[random.Random, int], int]) -> Counter:
    """``make(rng, k)`` for each input ``k`` (it returns how many samples were bad);
    checks the outcome, time and memory."""
    outcomes: Counter = Counter()
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    slowest = 0.0
    for k in range(inputs):
        rng = random.Random(f"{name}-{k}")
        start = time.perf_counter()
        try:
            outcomes["bad samples"] += make(rng, k)
            outcomes["loaded"] += 1
        except EXPECTED as err:
            message = str(err)
            assert "\n" not in message.strip() and len(message) < 2000, (name, k, message)
            outcomes[type(err).__name__] += 1
        except Exception as err:  # the finding, with its input
            raise AssertionError(f"{name} input {k}: {type(err).__name__}: {err}") from err
        slowest = max(slowest, time.perf_counter() - start)
        assert slowest < MAX_SECONDS, (name, k, slowest)
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before_mb
    assert growth < MAX_GROWTH_MB, (name, growth)
    print(f"{name}: {inputs} inputs, {dict(outcomes)}, slowest {slowest:.2f} s, "
          f"peak memory growth {growth:.0f} MB")  # fmt: skip
    return outcomes


# -- hostile values ---------------------------------------------------------------------
def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


SCALARS: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400, 0.5, -0.0,
    1e-300, 1e7, 1e308, -1e308, math.nan, math.inf, -math.inf, "", "x", "1", "0.5", "a.jpg",
    "../a.jpg", "/abs.jpg", "C:\\a.jpg", "a\x00b", "\udcff", "é" * 3,
]  # fmt: skip


def hostile(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value meant to break a reader."""
    roll = rng.random()
    if roll < 0.55 or depth > 3:
        return rng.choice(SCALARS)
    if roll < 0.7:
        return [hostile(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    if roll < 0.8:
        return {rng.choice(["id", "a", "", "counts", "size"]): hostile(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}  # fmt: skip
    if roll < 0.85:
        return _deep(rng.choice([50, 500]))  # deeper: see DEEP in the COCO test
    return [rng.uniform(-50, 150) for _ in range(rng.choice([0, 1, 2, 4, 5, 6, 8, 9]))]


def polygon(rng: random.Random, width: int, height: int) -> list[Any]:
    """Polygons, mostly valid, some with a hostile coordinate or length."""
    out = []
    for _ in range(rng.randint(0, 3)):
        n = rng.choice([0, 1, 2, 3, 3, 4, 6, 20])
        poly: list[Any] = []
        for _ in range(n):
            poly += [rng.uniform(-2, width + 2), rng.uniform(-2, height + 2)]
        if poly and rng.random() < 0.3:
            poly[rng.randrange(len(poly))] = rng.choice(SCALARS)
        if poly and rng.random() < 0.1:
            poly.pop()
        out.append(poly)
    return out


def rle(rng: random.Random, width: int, height: int) -> dict[str, Any]:
    """RLE objects: valid compressed / uncompressed, or damaged."""
    mask = np.zeros((height, width), dtype=np.uint8)
    y, x = rng.randrange(height), rng.randrange(width)
    mask[y : y + rng.randint(1, 8), x : x + rng.randint(1, 8)] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    counts: Any = encoded["counts"].decode()
    size: Any = [height, width]
    roll = rng.random()
    if roll < 0.2:
        flat = mask.flatten(order="F")
        change = np.flatnonzero(np.diff(flat)) + 1
        runs = np.diff([0, *change.tolist(), len(flat)]).tolist()
        counts = runs if flat[0] == 0 else [0, *runs]
    elif roll < 0.4:
        counts = "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 12)))
    elif roll < 0.5:
        counts = [rng.choice([0, 1, 5, -3, 10**20, 2.5, "a"]) for _ in range(rng.randint(0, 5))]
    elif roll < 0.6:
        counts = hostile(rng)
    if rng.random() < 0.2:
        size = rng.choice([[width, height], [height], [0, 0], hostile(rng), [10**9, 10**9]])
    out = {"size": size, "counts": counts}
    if rng.random() < 0.1:
        del out[rng.choice(["size", "counts"])]
    return out


# -- COCO -------------------------------------------------------------------------------
SIZES = {"a.png": (24, 16), "b.png": (20, 20), "c.png": (17, 9)}


def coco_base() -> dict[str, Any]:
    images = [{"id": i + 1, "file_name": name, "width": w, "height": h}
              for i, (name, (w, h)) in enumerate(SIZES.items())]  # fmt: skip
    annotations = []
    for k in range(6):
        image = images[k % 3]
        annotations.append({
            "id": k + 1, "image_id": image["id"], "category_id": 1 + k % 2,
            "bbox": [1.0, 2.0, 6.0, 5.0], "area": 30.0, "iscrowd": 0,
            "segmentation": [[1, 2, 7, 2, 7, 7, 1, 7]],
        })  # fmt: skip
    categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def mutate_coco(data: dict[str, Any], rng: random.Random) -> None:
    for _ in range(rng.randint(1, 2)):
        roll = rng.random()
        section = rng.choice(["images", "annotations", "annotations", "categories"])
        if roll < 0.45:
            section = "annotations"
        records = data.get(section)
        if not isinstance(records, list) or not records:
            continue
        index = rng.randrange(len(records))
        record = records[index]
        if roll < 0.03:
            data[section] = hostile(rng)
        elif roll < 0.06:
            records[index] = hostile(rng)
        elif roll < 0.1:
            records.append(copy.deepcopy(record))
        elif not isinstance(record, dict):
            continue
        elif roll < 0.4:  # masks: polygons or RLE on image a.png
            record["image_id"] = 1
            w, h = SIZES["a.png"]
            if rng.random() < 0.6:
                record["segmentation"] = polygon(rng, w, h)
            else:
                record["segmentation"] = rle(rng, w, h)
                record["iscrowd"] = rng.choice([0, 1, 1])
        elif roll < 0.5:
            record["bbox"] = [rng.choice([rng.uniform(-5, 30)] * 3 + [rng.choice(SCALARS)])
                              for _ in range(rng.choice([4, 4, 4, 3, 5]))]  # fmt: skip
        elif roll < 0.6 and record:
            del record[rng.choice(sorted(record))]
        elif roll < 0.7 and section == "images":  # a size that is not the file's
            record[rng.choice(["width", "height"])] = rng.choice([1, 5, 100, 10**6, 10**12])
        else:
            key = rng.choice([*record, "extra"]) if record else "id"
            record[key] = hostile(rng)


@pytest.fixture(scope="module")
def coco_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("coco") / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (w, h) in SIZES.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_hostile_coco_files(coco_images: Path) -> None:
    json_path = coco_images.parent / "instances.json"

    def make(rng: random.Random, k: int) -> None:
        data = coco_base()
        mutate_coco(data, rng)
        text = json.dumps(data)  # NaN / Infinity as Python writes them
        if rng.random() < 0.05:  # nesting deeper than json.dumps (and json.loads) can go
            depth = rng.choice([5_000, 200_000])
            text = text.replace('"dog"', "[" * depth + "]" * depth, 1)
        json_path.write_text(text)
        joint = k % 2 == 0
        annotations = COCOAnnotations(json_path, allow_outside_root=rng.random() < 0.2,
                                      masks=joint)  # fmt: skip
        transform = (ssd_train_transforms(32, MEAN, STD, "ssd") if rng.random() < 0.5
                     else ssd_eval_transforms(32, MEAN, STD))  # fmt: skip
        if joint:
            dataset = COCOJointDataset(coco_images, annotations, transform,
                                       eval_masks=rng.random() < 0.5)  # fmt: skip
        else:
            dataset = COCODetectionDataset(coco_images, annotations, transform)
        bad = 0
        for i in range(len(dataset)):
            try:
                image, target = dataset[i]
            except BadSampleError:
                bad += 1  # a documented per-sample error (a size that is not the file's)
                continue
            assert image.shape == (3, 32, 32)
            assert target["boxes"].shape[1:] == (4,) and bool(target["boxes"].isfinite().all())
            if joint:
                values = set(target["mask"].unique().tolist())
                assert values <= {0, 1, 2, 255}
        return bad

    outcomes = _run("COCO", _count(40), make)
    assert outcomes["loaded"] > 5 and outcomes["AnnotationError"]


# -- VOC and Cityscapes trees -------------------------------------------------------------
def hostile_png(rng: random.Random, path: Path, size: tuple[int, int]) -> None:
    """Replace ``path`` with a mask of an odd mode, values, size or bytes."""
    w, h = size
    kind = rng.choice(["rgb", "rgba", "float", "1bit", "16bit", "32neg", "values", "size",
                       "empty", "truncated", "text", "missing", "palette", "big16"])  # fmt: skip
    data = np.random.default_rng(rng.randrange(2**32))
    if kind == "rgb":
        Image.fromarray(data.integers(0, 3, (h, w, 3), dtype=np.uint8)).save(path, format="PNG")
    elif kind == "rgba":
        Image.fromarray(data.integers(0, 3, (h, w, 4), dtype=np.uint8)).save(path, format="PNG")
    elif kind == "float":
        Image.fromarray(data.random((h, w)).astype(np.float32)).save(path, format="TIFF")
    elif kind == "1bit":
        Image.fromarray(data.random((h, w)) > 0.5).save(path, format="PNG")
    elif kind == "16bit":
        Image.fromarray(data.integers(0, 3, (h, w)).astype(np.uint16)).save(path, format="PNG")
    elif kind == "big16":
        Image.fromarray(data.integers(0, 65535, (h, w)).astype(np.uint16)).save(path, format="PNG")
    elif kind == "32neg":
        # 32-bit signed values (PNG has no such mode; Pillow reads the TIFF whatever its name)
        Image.fromarray(data.integers(-5, 40000, (h, w)).astype(np.int32)).save(path, format="TIFF")
    elif kind == "values":
        Image.fromarray(data.integers(0, 256, (h, w), dtype=np.uint8)).save(path, format="PNG")
    elif kind == "palette":
        Image.fromarray(data.integers(0, 2, (h, w), dtype=np.uint8)).convert("P").save(
            path, format="PNG"
        )
    elif kind == "size":
        Image.fromarray(np.zeros((h + 3, max(1, w - 2)), dtype=np.uint8)).save(path, format="PNG")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[: rng.randint(1, 60)] if path.is_file() else b"\x89P")
    elif kind == "text":
        path.write_text("not a png")
    elif kind == "missing" and path.is_file():
        path.unlink()


def _samples(datasets: list[Any]) -> int:
    """One ``__getitem__`` per sample; returns how many were bad (``BadSampleError``)."""
    bad = 0
    for dataset in datasets:
        for i in range(len(dataset)):
            try:
                dataset[i]
            except BadSampleError:
                bad += 1
    return bad


@pytest.fixture(scope="module")
def voc_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("voc_template")
    write_voc(root, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]})
    return root


def test_hostile_voc_trees(voc_template: Path, tmp_path: Path) -> None:
    lines = ["2007_000001", "2007_000002", "2007_000003", "2007_000001", "", "   ",
             "a b c", "JPEGImages/2007_000001.jpg SegmentationClass/2007_000002.png",
             "JPEGImages/2007_000002.jpg SegmentationClass/2007_000002.png", ".hidden",
             "../../etc/passwd", "nope", "\t2007_000002\t", "é"]  # fmt: skip

    def make(rng: random.Random, k: int) -> None:
        root = tmp_path / f"voc{k}"
        shutil.copytree(voc_template, root)
        voc = root / "VOCdevkit" / "VOC2012"
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.35:
                split = voc / "ImageSets" / "Segmentation" / rng.choice(["train.txt", "val.txt"])
                if rng.random() < 0.1:
                    split.write_bytes(bytes(rng.randrange(256) for _ in range(20)))
                else:
                    split.write_text("\n".join(rng.choice(lines) for _ in range(rng.randint(0, 4))))
            elif roll < 0.8:
                mask = rng.choice(
                    sorted((voc / "SegmentationClass").glob("*.png")) or [voc / "x.png"]
                )
                hostile_png(rng, mask, (rng.randint(40, 72), rng.randint(40, 72)))
            else:
                image = rng.choice(sorted((voc / "JPEGImages").glob("*.jpg")))
                hostile_png(rng, image, (40, 40))
        dm = VOCSegmentationDataModule(str(root), crop_size=32, loader=LoaderOptions(batch_size=2))
        dm.setup("fit")
        bad = _samples([dm.train_set, dm.val_set])
        shutil.rmtree(root)
        return bad

    outcomes = _run("VOC", _count(15), make)
    assert outcomes["loaded"] and outcomes["bad samples"] and outcomes["AnnotationError"]


@pytest.fixture(scope="module")
def cityscapes_template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes_template")
    write_cityscapes(root, {"train": 2, "val": 2}, size=(24, 48))
    rng = np.random.default_rng(0)
    for mask in root.glob("gtFine/*/*/*_gtFine_labelIds.png"):
        ids = np.asarray(Image.open(mask)).astype(np.int32)
        instances = np.where(ids == 26, 26000 + rng.integers(0, 3, ids.shape), ids)
        Image.fromarray(instances.astype(np.uint16)).save(
            str(mask).replace("labelIds", "instanceIds")
        )
    return root


def test_hostile_cityscapes_trees(cityscapes_template: Path, tmp_path: Path) -> None:
    def make(rng: random.Random, k: int) -> None:
        root = tmp_path / f"cs{k}"
        shutil.copytree(cityscapes_template, root)
        split = rng.choice(["train", "val"])
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            images = sorted((root / "leftImg8bit" / split).glob("*/*.png"))
            if roll < 0.2 and images:
                image = rng.choice(images)
                new = rng.choice(["x.png", "aachen_1_2_leftImg8bit.png", "a b_leftImg8bit.png",
                                  "bremen_000000_000019_leftImg8bit.png", ".png", "x.txt"])  # fmt: skip
                image.rename(image.parent / new)
            elif roll < 0.3:
                (root / "leftImg8bit" / split / rng.choice(["stray.png", "zz"])).write_text("x")
            elif roll < 0.4:
                (root / "gtFine" / split / "aachen" / "aachen_999999_000019_gtFine_labelIds.png"
                 ).write_bytes(b"")  # fmt: skip
            else:
                kind = rng.choice(["labelIds", "instanceIds", "leftImg8bit"])
                files = sorted(root.glob(f"*/{split}/*/*_{kind}.png"))
                if files:
                    hostile_png(rng, rng.choice(files), (48, 24))
        if k % 2:
            dm: Any = CityscapesDataModule(
                str(root), crop_size=32, loader=LoaderOptions(batch_size=2)
            )
            dm.setup("fit")
            bad = _samples([dm.train_set, dm.val_set])
        else:
            dm = CityscapesJointDataModule(
                str(root), image_size=32, loader=LoaderOptions(batch_size=2)
            )
            dm.setup("fit")
            dm.ground_truth("validate")
            bad = _samples([dm._datasets["train"], dm._datasets["validate"]])
        shutil.rmtree(root)
        return bad

    outcomes = _run("Cityscapes", _count(15), make)
    assert outcomes["loaded"] and outcomes["bad samples"]


@pytest.mark.parametrize(
    ("kind", "values", "problem"),
    [
        ("instanceIds", -5, "values must be a label id or label id * 1000 + k, found -5"),
        ("instanceIds", 40_000, "instanceIds values [40] are not Cityscapes label ids"),
        ("labelIds", 300, "mask values must be 0..255"),
        ("labelIds", 40, "labelIds values [40] are not Cityscapes label ids"),
    ],
)
def test_cityscapes_joint_checks_its_pngs(
    cityscapes_template: Path, tmp_path: Path, kind: str, values: int, problem: str
) -> None:
    # found by the fuzz: bare PIL reads; a negative id indexed the label table from its end
    root = tmp_path / "cs"
    shutil.copytree(cityscapes_template, root)
    target = sorted(root.glob(f"gtFine/val/*/*_{kind}.png"))[0]
    array = np.full((24, 48), values, dtype=np.int32)
    Image.fromarray(array).save(target, format="TIFF")  # 32-bit signed, read whatever the name
    dm = CityscapesJointDataModule(str(root), image_size=32, loader=LoaderOptions(batch_size=2))
    dm.setup("validate")
    with pytest.raises(BadSampleError, match=re.escape(problem)) as info:
        _ = [dm._datasets["validate"][i] for i in range(2)]
    assert str(target) in str(info.value)
