"""Exported files describe themselves: kind, class names, input size and normalization in
the file (ONNX metadata, OpenVINO runtime info), and ``load_exported(path).predict`` takes
images as they come."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.data.ssd_transforms import ssd_eval_transforms
from tasks.data.transforms import to_chw_tensor
from tasks.export import export, load_exported
from tasks.export.metadata import ExportInfo, read_info
from tasks.export.runtime import _preprocess

MEAN, STD = (0.4, 0.45, 0.5), (0.2, 0.25, 0.3)


def _detector_checkpoint(tmp_path: Path) -> Path:
    from tasks.detection import DetectionTask

    task = DetectionTask(num_classes=2, width_mult=0.35, image_size=96)
    hparams = {**task.hparams, "_class_path": "tasks.detection.DetectionTask"}
    path = tmp_path / "run" / "det.ckpt"
    path.parent.mkdir()
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": hparams,
                "class_names": ["raccoon", "balloon"], "category_ids": [1, 2],
                "normalization": {"mean": list(MEAN), "std": list(STD)}}, path)  # fmt: skip
    return path


def test_exported_files_carry_kind_names_size_and_normalization(tmp_path: Path) -> None:
    ckpt = _detector_checkpoint(tmp_path)
    result = export(str(ckpt), output_dir=str(tmp_path / "out"), format="openvino",
                    check=False, printer=None)  # fmt: skip
    forms = {"raw", "end2end"}
    for path in result.files:
        info = read_info(path)
        assert info is not None, path
        form = "end2end" if "end2end" in path.name else "raw"
        forms.discard(form)
        assert info == ExportInfo("detector", form, (96, 96), ("raccoon", "balloon"), MEAN, STD)
    assert not forms and len(result.files) == 4  # .onnx and .xml of both forms


def test_predict_takes_raw_images_and_answers_in_their_pixels(tmp_path: Path) -> None:
    ckpt = _detector_checkpoint(tmp_path)
    result = export(str(ckpt), output_dir=str(tmp_path / "out"), detector_form="end2end",
                    check=False, printer=None)  # fmt: skip
    model = load_exported(result.files[0])
    image = np.random.default_rng(0).integers(0, 256, (150, 60, 3), dtype=np.uint8)
    # the same input as `mobilezoo predict` builds (the data modules' eval pipeline)
    ours = _preprocess(image, model.info)
    pipeline = ssd_eval_transforms(96, MEAN, STD)
    theirs = to_chw_tensor(pipeline(image=image, bboxes=np.zeros((0, 4)), labels=[])["image"])[None]
    assert ours.shape == theirs.shape == (1, 3, 96, 96)
    assert (ours - theirs).abs().max() <= 1.01 / 255 / min(STD)  # resize rounding only
    (got,) = model.predict([image])
    raw = model(ours)[0]
    scale = torch.tensor([60 / 96, 150 / 96, 60 / 96, 150 / 96])  # x by width, y by height
    torch.testing.assert_close(got["boxes"], raw["boxes"] * scale)
    assert got["names"] == [("raccoon", "balloon")[i] for i in raw["labels"].tolist()]
    assert len(got["names"]) > 0
    grey = tmp_path / "grey.png"
    from PIL import Image

    Image.fromarray(image[..., 0]).save(grey)  # a path, greyscale: read as RGB
    assert model.predict([grey])[0]["boxes"].shape[1] == 4


def test_a_file_without_a_description_is_runnable_but_not_predictable(tmp_path: Path) -> None:
    import onnx

    ckpt = _detector_checkpoint(tmp_path)
    path = export(str(ckpt), output_dir=str(tmp_path / "out"), detector_form="end2end",
                  check=False, printer=None).files[0]  # fmt: skip
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    model = load_exported(path)
    assert model.info is None
    assert len(model(torch.zeros(1, 3, 96, 96))) == 1
    with pytest.raises(ValueError, match="export it again"):
        model.predict([np.zeros((10, 10, 3), np.uint8)])


@pytest.mark.parametrize(
    "change",
    [{"mobilezoo.class_names": "[[[[1]]]]"}, {"mobilezoo.std": "[0, 1, 1]"},
     {"mobilezoo.input_size": "[96]"}, {"mobilezoo.mean": "not json"},
     {"mobilezoo.class_names": '["a"' + ', "b"' * 200_000 + "]"}],
)  # fmt: skip
def test_a_hostile_description_is_ignored(change: dict[str, str]) -> None:
    info = ExportInfo("detector", "end2end", (96, 96), ("a", "b"), MEAN, STD)
    assert ExportInfo.from_props(info.props()) == info
    assert ExportInfo.from_props({**info.props(), **change}) is None
