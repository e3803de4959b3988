"""Annotation files are checked field by field at setup: every error names the file, the
record and the field; what can be repaired without changing a metric is repaired, counted
and logged in one line. One case per check, on small files in the native layouts."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tasks.data.cityscapes import CityscapesDataModule
from tasks.data.coco import COCOAnnotations
from tasks.data.imagefolder import ImageFolderDataModule
from tasks.data.io import BadSampleError
from tasks.data.validate import AnnotationError
from tasks.data.voc import VOCSegmentationDataModule, read_id_list
from tests.tasks.test_segmentation_data import write_cityscapes, write_voc


def coco_dict() -> dict[str, Any]:
    """A valid instances file: 2 images, 2 categories (non-contiguous ids), 3 boxes."""
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 7, "file_name": "sub/b.jpg", "width": 50, "height": 50},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 30], "area": 600.0,
             "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 9, "bbox": [0, 0, 5.5, 5], "area": 27.5,
             "iscrowd": 1},
            {"id": 5, "image_id": 7, "category_id": 9, "bbox": [1, 2, 3, 4], "area": 12,
             "iscrowd": 0},
        ],
    }  # fmt: skip


def write_json(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(data))
    return path


def test_valid_file_reads_without_repairs(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        ann = COCOAnnotations(write_json(tmp_path, coco_dict()))
    assert ann.category_ids == [3, 9] and sorted(ann.images) == [1, 7]
    assert ann.labels[1].tolist() == [0] and ann.labels[7].tolist() == [1]  # crowd: no target
    assert [a["id"] for a in ann.ground_truth["annotations"]] == [1, 2, 5]
    assert not ann.repairs.counts and not caplog.records


def _set(section: str, index: int, **fields: Any) -> Callable[[dict], None]:
    return lambda d: d[section][index].update(fields)


def _pop(section: str, index: int, key: str) -> Callable[[dict], None]:
    return lambda d: d[section][index].pop(key)


# (edit, record named in the error, field, problem) -- each one passed silently or crashed
# without naming the record before these checks.
CASES: dict[str, tuple[Callable[[dict], Any], str, str, str]] = {
    "annotations-not-a-list": (
        lambda d: d.update(annotations={"id": 1}),
        "top level",
        "annotations",
        "must be a list",
    ),
    "annotations-missing": (lambda d: d.pop("annotations"), "top level", "annotations", "missing"),
    "image-not-an-object": (
        lambda d: d["images"].append([1, "c.jpg"]),
        r"images\[2\]",
        r"\(record\)",
        "object",
    ),
    "duplicate-image-id": (
        _set("images", 1, id=1),
        r"image id 1 \(images\[1\]\)",
        "id",
        r"also the id of images\[0\]",
    ),
    "string-image-id": (
        _set("images", 0, id="1"),
        r"images\[0\]",
        "id",
        r"integer, got '1' \(str\)",
    ),
    "huge-image-id": (
        _set("images", 0, id=2**63),
        r"images\[0\]",
        "id",
        r"0\.\.9223372036854775807",
    ),
    "negative-image-id": (_set("images", 0, id=-1), r"images\[0\]", "id", r"must be in 0\.\."),
    "bool-image-id": (_set("images", 0, id=True), r"images\[0\]", "id", "integer"),
    "float-image-id": (_set("images", 0, id=1.5), r"images\[0\]", "id", "integer"),
    "duplicate-file-name": (
        _set("images", 1, file_name="a.jpg"),
        "image id 7",
        "file_name",
        "also the file of image id 1",
    ),
    "absolute-file-name": (
        _set("images", 0, file_name="/etc/passwd"),
        "image id 1",
        "file_name",
        "absolute path",
    ),
    "windows-absolute-file-name": (
        _set("images", 0, file_name="C:\\data\\a.jpg"),
        "image id 1",
        "file_name",
        "absolute",
    ),
    "dotdot-file-name": (
        _set("images", 1, file_name="sub/../../b.jpg"),
        "image id 7",
        "file_name",
        r"'\.\.'",
    ),
    "empty-file-name": (_set("images", 0, file_name=""), "image id 1", "file_name", "non-empty"),
    "zero-width": (_set("images", 0, width=0), "image id 1", "width", r"in 1\.\."),
    "string-height": (_set("images", 0, height="80"), "image id 1", "height", "integer"),
    "missing-height": (_pop("images", 0, "height"), r"images\[0\]", "height", "missing"),
    "duplicate-category-id": (
        _set("categories", 1, id=3),
        r"category id 3 \(categories\[1\]\)",
        "id",
        r"also the id of categories\[0\]",
    ),
    "string-category-id": (_set("categories", 0, id="3"), r"categories\[0\]", "id", "integer"),
    "null-category-name": (_set("categories", 0, name=None), "category id 3", "name", "string"),
    "no-categories": (lambda d: d.update(categories=[]), "top level", "categories", "empty"),
    "annotation-not-an-object": (
        lambda d: d["annotations"].append(None),
        r"annotations\[3\]",
        r"\(record\)",
        "object",
    ),
    "duplicate-annotation-id": (
        _set("annotations", 2, id=1),
        r"annotation id 1 \(annotations\[2\]\)",
        "id",
        r"also the id of annotations\[0\]",
    ),
    "zero-annotation-id": (_set("annotations", 1, id=0), r"annotations\[1\]", "id", r"1\.\."),
    "negative-annotation-id": (_set("annotations", 1, id=-4), r"annotations\[1\]", "id", r"1\.\."),
    "huge-annotation-id": (_set("annotations", 1, id=2**64), r"annotations\[1\]", "id", r"1\.\."),
    "string-annotation-id": (_set("annotations", 1, id="2"), r"annotations\[1\]", "id", "integer"),
    "string-image-id-in-annotation": (
        _set("annotations", 0, image_id="1"),
        "annotation id 1",
        "image_id",
        "integer",
    ),
    "unknown-image-id": (
        _set("annotations", 0, image_id=2),
        "annotation id 1",
        "image_id",
        r"2 names no image",
    ),
    "missing-image-id": (
        _pop("annotations", 0, "image_id"),
        "annotation id 1",
        "image_id",
        "missing",
    ),
    "unknown-category-id": (
        _set("annotations", 0, category_id=4),
        "annotation id 1",
        "category_id",
        r"4 names no category \(ids: \[3, 9\]\)",
    ),
    "float-category-id": (
        _set("annotations", 0, category_id=3.0),
        "annotation id 1",
        "category_id",
        "integer",
    ),
    "bbox-strings": (
        _set("annotations", 0, bbox=["10", "10", "20", "30"]),
        "annotation id 1",
        "bbox",
        "list of 4 numbers",
    ),
    "bbox-null": (_set("annotations", 0, bbox=None), "annotation id 1", "bbox", "list of 4"),
    "bbox-null-value": (
        _set("annotations", 0, bbox=[1, None, 2, 3]),
        "annotation id 1",
        "bbox",
        "list of 4",
    ),
    "bbox-three-values": (_set("annotations", 0, bbox=[1, 2, 3]), "annotation id 1", "bbox", "4"),
    "bbox-missing": (_pop("annotations", 0, "bbox"), "annotation id 1", "bbox", "list of 4"),
    "bbox-nan": (
        _set("annotations", 0, bbox=[1, 2, float("nan"), 3]),
        "annotation id 1",
        "bbox",
        "finite",
    ),
    "bbox-infinite": (
        _set("annotations", 0, bbox=[float("inf"), 2, 1, 3]),
        "annotation id 1",
        "bbox",
        "finite",
    ),
    "bbox-negative-width": (
        _set("annotations", 0, bbox=[10, 2, -1, 3]),
        "annotation id 1",
        "bbox",
        ">= 0",
    ),
    "negative-area": (_set("annotations", 0, area=-5.0), "annotation id 1", "area", ">= 0"),
    "string-area": (_set("annotations", 0, area="600"), "annotation id 1", "area", "number"),
    "null-area": (_set("annotations", 0, area=None), "annotation id 1", "area", "number"),
    "iscrowd-2": (_set("annotations", 0, iscrowd=2), "annotation id 1", "iscrowd", "0 or 1"),
    "iscrowd-string": (_set("annotations", 0, iscrowd="0"), "annotation id 1", "iscrowd", "0 or 1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_coco_field_errors_name_file_record_and_field(tmp_path: Path, case: str) -> None:
    edit, record, field, problem = CASES[case]
    data = coco_dict()
    edit(data)
    path = write_json(tmp_path, data)
    with pytest.raises(
        AnnotationError, match=f"{record}[^:]*: field '{field}' .*{problem}"
    ) as info:
        COCOAnnotations(path)
    assert str(info.value).startswith(f"{path}: ")


def test_coco_top_level_must_be_an_object(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="top level: field '\\(file\\)' must be an object"):
        COCOAnnotations(write_json(tmp_path, [coco_dict()]))
    path = tmp_path / "broken.json"
    path.write_text('{"images": [')
    with pytest.raises(AnnotationError, match="broken.json: file: .*not valid JSON"):
        COCOAnnotations(path)


def test_hostile_value_gives_a_short_message(tmp_path: Path) -> None:
    data = coco_dict()
    data["images"][0]["id"] = "x" * 10_000_000
    with pytest.raises(AnnotationError) as info:
        COCOAnnotations(write_json(tmp_path, data))
    assert len(str(info.value)) < 400


def test_outside_root_allowed_by_option(tmp_path: Path) -> None:
    data = coco_dict()
    data["images"][0]["file_name"] = "../elsewhere/a.jpg"
    data["images"][1]["file_name"] = str(tmp_path / "b.jpg")
    path = write_json(tmp_path, data)
    with pytest.raises(AnnotationError, match="allow_outside_root"):
        COCOAnnotations(path)
    ann = COCOAnnotations(path, allow_outside_root=True)
    assert ann.images[1]["file_name"] == "../elsewhere/a.jpg"


def test_repairs_are_counted_and_logged_once(tmp_path: Path, caplog) -> None:
    data = coco_dict()
    data["annotations"][0].pop("id")  # ids are internal to the evaluator: assigned
    data["annotations"][1].pop("id")
    data["annotations"][2].pop("area")  # area from the box
    data["images"][0]["width"] = 100.0  # integral float
    with caplog.at_level(logging.WARNING):
        ann = COCOAnnotations(write_json(tmp_path, data))
    ids = [a["id"] for a in ann.ground_truth["annotations"]]
    assert sorted(ids) == [5, 6, 7] and len(set(ids)) == 3  # fresh ids above the largest
    assert ann.ground_truth["annotations"][2]["area"] == 12.0
    assert ann.images[1]["width"] == 100 and type(ann.images[1]["width"]) is int
    assert ann.repairs["missing annotation ids assigned"] == 2
    assert ann.repairs["missing areas set to the box area"] == 1
    assert len(caplog.records) == 1
    assert "2 missing annotation ids assigned" in caplog.text
    assert "1 missing areas set to the box area" in caplog.text


# -- VOC split lists ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "record", "field", "problem"),
    [
        ("a\nb\na\n", "line 3", "image", "id 'a' is also on line 1"),
        ("a\n/JPEGImages/b.jpg /SegmentationClassAug/c.png\n", "line 2", "mask", "stems differ"),
        ("a b.jpg b.png\n", "line 1", r"\(line\)", "3 fields"),
        ("a\n.jpg\n", "line 2", "image", "no image id"),
        ("\n \n", "file", r"\(lines\)", "empty"),
    ],
    ids=["duplicate-id", "image-mask-mismatch", "three-fields", "no-id", "empty"],
)
def test_voc_list_errors_name_the_line(tmp_path: Path, text, record, field, problem) -> None:
    path = tmp_path / "train.txt"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=f"train.txt: {record}: field '{field}' .*{problem}"):
        read_id_list(path)


def test_voc_duplicate_val_id_is_refused_by_the_data_module(tmp_path: Path) -> None:
    splits = {"train": ["2007_000001"], "val": ["2007_000002", "2007_000003", "2007_000002"]}
    write_voc(tmp_path, splits)
    dm = VOCSegmentationDataModule(str(tmp_path))
    with pytest.raises(AnnotationError, match=r"val.txt: line 3: field 'image' .*line 1"):
        dm.setup("validate")


# -- Cityscapes names and masks ------------------------------------------------------------


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.rglob(pattern))[0]


def test_cityscapes_image_names_follow_the_pattern(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, {"val": 2})
    image = _first(tmp_path / "leftImg8bit", "*_leftImg8bit.png")
    mask = _first(tmp_path / "gtFine", "*_labelIds.png")
    # the city in the name must be its folder's: bremen_... inside aachen/
    wrong_city = image.with_name(image.name.replace("aachen", "bremen"))
    image.rename(wrong_city)
    mask.rename(mask.with_name(mask.name.replace("aachen", "bremen")))
    with pytest.raises(AnnotationError, match=r"aachen/bremen_000000_000019_leftImg8bit.png: "
                       r"file: field 'name' must be aachen_<6 digits>"):  # fmt: skip
        CityscapesDataModule(str(tmp_path)).samples("val")


def test_cityscapes_mask_without_image_is_an_error(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, {"val": 2})
    _first(tmp_path / "leftImg8bit", "*_leftImg8bit.png").unlink()
    with pytest.raises(
        AnnotationError, match=r"_gtFine_labelIds.png: file: field 'image' is missing"
    ):
        CityscapesDataModule(str(tmp_path)).samples("val")


def test_cityscapes_other_files_are_ignored_and_counted(tmp_path: Path, caplog) -> None:
    write_cityscapes(tmp_path, {"val": 2})
    (tmp_path / "leftImg8bit" / "val" / "aachen" / "notes.txt").write_text("x")
    (tmp_path / "leftImg8bit" / "val" / "README").write_text("x")
    with caplog.at_level(logging.WARNING):
        pairs = CityscapesDataModule(str(tmp_path)).samples("val")
    assert len(pairs) == 2 and len(caplog.records) == 1
    assert "1 files not named *_leftImg8bit.png ignored" in caplog.text
    assert "1 files outside a city folder ignored" in caplog.text


@pytest.mark.parametrize("value", [34, 100, 254])
def test_cityscapes_mask_value_that_is_no_label_id_names_the_file(tmp_path, value) -> None:
    write_cityscapes(tmp_path, {"val": 1})
    mask_path = _first(tmp_path / "gtFine", "*_labelIds.png")
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[3, 4] = value  # was silently mapped to "ignored" (255)
    Image.fromarray(mask).save(mask_path)
    dm = CityscapesDataModule(str(tmp_path))
    dm.setup("validate")
    with pytest.raises(BadSampleError, match=rf"labelIds.png: raw label values \[{value}\] are "
                       r"not label ids of this data set \(0\.\.33, 255\)"):  # fmt: skip
        dm.val_set[0]


def test_cityscapes_void_255_is_accepted(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, {"val": 1})
    mask_path = _first(tmp_path / "gtFine", "*_labelIds.png")
    mask = np.asarray(Image.open(mask_path)).copy()
    mask[0] = 255
    Image.fromarray(mask).save(mask_path)
    dm = CityscapesDataModule(str(tmp_path))
    dm.setup("validate")
    assert (dm.val_set[0]["mask"][0] == 255).all()


def test_voc_mask_in_int32_with_negative_values_names_the_file(tmp_path: Path) -> None:
    """A 32-bit mask whose -1 would wrap around to 255 (void) is refused."""
    voc = write_voc(tmp_path, {"train": ["2007_000001"], "val": ["2007_000002"]})
    png = voc / "SegmentationClass" / "2007_000002.png"
    mask = np.asarray(Image.open(png)).astype(np.int32)
    mask[5, 5] = -1
    # a TIFF under the .png name: Pillow reads the content, whatever the suffix
    Image.fromarray(mask).save(png, format="TIFF")
    dm = VOCSegmentationDataModule(str(tmp_path))
    dm.setup("validate")
    with pytest.raises(BadSampleError, match=r"2007_000002.png: mask values must be 0..255"):
        dm.val_set[0]


# -- ImageFolder trees ---------------------------------------------------------------------


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(path)


def _tree(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 2) -> Path:
    for split in ("train", "val"):
        for name in classes:
            for i in range(per_class):
                _image(root / split / name / f"{i}.png")
    return root


def test_imagefolder_hidden_entries_are_not_classes_or_images(tmp_path: Path, caplog) -> None:
    root = _tree(tmp_path)
    for split in ("train", "val"):  # what Jupyter and macOS leave behind
        _image(root / split / ".ipynb_checkpoints" / "0-checkpoint.png")
        (root / split / "cat" / ".DS_Store").write_bytes(b"\0")
    dm = ImageFolderDataModule(str(root))
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.train_set.classes == ["cat", "dog"] and dm.num_classes == 2 and dm.classes == [
        "cat", "dog"
    ]  # fmt: skip
    assert len(dm.train_set) == 4
    line = next(r.getMessage() for r in caplog.records if "train:" in r.getMessage())
    assert "1 hidden folders ignored" in line and "1 hidden files ignored" in line


def test_imagefolder_counts_ignored_files_and_reads_sub_folders(tmp_path, caplog) -> None:
    root = _tree(tmp_path)
    _image(root / "train" / "dog" / "batch2" / "7.png")  # a sub-folder, as torchvision reads
    (root / "train" / "dog" / "labels.csv").write_text("x")
    (root / "train" / "README.txt").write_text("x")
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    with caplog.at_level(logging.WARNING):
        dm = ImageFolderDataModule(str(root))
        dm.setup("fit")
    assert [p.relative_to(root / "train").as_posix() for p, _ in dm.train_set.samples] == [
        "cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "dog/batch2/7.png"
    ]  # fmt: skip
    assert dm.train_set.classes == ["cat", "dog", "empty"]  # an empty class keeps its label
    assert [label for _, label in dm.train_set.samples] == [0, 0, 1, 1, 1]
    line = next(r.getMessage() for r in caplog.records if "train:" in r.getMessage())
    assert "1 files outside a class folder ignored" in line
    assert "1 files without an image extension" in line
    assert "1 class folders without images" in line


def test_imagefolder_class_mismatch_names_the_classes(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    _image(root / "val" / "cow" / "0.png")
    with pytest.raises(ValueError, match=r"only in train: \[\], only in val: \['cow'\]"):
        ImageFolderDataModule(str(root)).setup("fit")


def test_imagefolder_symlink_loop_is_read_once(tmp_path: Path, caplog) -> None:
    root = _tree(tmp_path)
    (root / "train" / "cat" / "again").symlink_to(root / "train" / "cat")
    with caplog.at_level(logging.WARNING):
        dm = ImageFolderDataModule(str(root))
        dm.setup("fit")
    assert len(dm.train_set) == 4
    assert "1 folders reached twice through a symlink ignored" in caplog.text


def test_the_cli_reports_a_bad_annotation_file_in_one_line(tmp_path: Path, capsys,
                                                           monkeypatch) -> None:  # fmt: skip
    from tasks.cli.command import main as cli_main

    data = coco_dict()
    data["images"][1]["id"] = 1  # two images share an id
    (tmp_path / "annotations").mkdir()
    for split in ("train2017", "val2017"):
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    config = Path(__file__).parents[2] / "configs" / "detection_coco_ssdlite_mobilenetv2.yaml"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "-c", str(config), f"--data.init_args.root={tmp_path}",
                  "--trainer.logger=false", "--trainer.devices=1", "--trainer.accelerator=cpu",
                  "--trainer.strategy=auto", "--trainer.num_nodes=1",
                  "--trainer.sync_batchnorm=false", "--model.init_args.weights_backbone=null",
                  "--model.init_args.width_mult=0.35"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mobilezoo: error: ") and "instances_val2017.json" in err[-1]
    assert "Traceback" not in "\n".join(err)
