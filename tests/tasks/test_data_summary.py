"""The one-line data summary."""

from __future__ import annotations

from types import SimpleNamespace

from torch.utils.data import Dataset

from tasks import DemoDetectionDataModule, DemoSegmentationDataModule
from tasks.data.demo import SceneOptions
from tasks.data.summary import describe_data


def test_detection_summary_counts_images_and_boxes(tmp_path):
    dm = DemoDetectionDataModule(root=str(tmp_path / "d"), scene=SceneOptions(num_train=5, num_val=3, generated_size=64), image_size=64)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    boxes = sum(len(dm._datasets["validate"].annotations.boxes[i]) for i in dm._datasets["validate"].image_ids)  # fmt: skip
    line = describe_data(dm)
    assert line.startswith("DemoDetectionDataModule: train 5 images, ")
    assert f"; val 3 images, {boxes} boxes; generated demo set in {tmp_path / 'd'}" in line


def test_segmentation_summary(tmp_path):
    dm = DemoSegmentationDataModule(root=str(tmp_path / "s"), train_images=2, val_images=3, generated_size=32, crop_size=32)  # fmt: skip
    dm.prepare_data()
    dm.setup("validate")
    assert describe_data(dm) == f"DemoSegmentationDataModule: val 3 images; generated demo set in {tmp_path / 's'}"  # fmt: skip


class _Boxes(Dataset):
    annotations = SimpleNamespace(boxes={1: [0, 0], 2: [0]}, num_dropped=2, num_clipped=1)
    image_ids = [1, 2]

    def __len__(self) -> int:
        return 2


def test_dropped_and_clipped_boxes_are_reported():
    dm = SimpleNamespace(_datasets={"train": _Boxes()})
    assert describe_data(dm) == "SimpleNamespace: train 2 images, 3 boxes (2 dropped, 1 clipped)"
