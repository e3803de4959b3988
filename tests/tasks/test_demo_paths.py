"""The demo generators live in tasks.data.demo; the old module names still import."""

import importlib

import pytest

import tasks.data.demo as demo


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("tasks.data.demo_classification", "tasks.data.demo.classification"),
        ("tasks.data.demo_detection", "tasks.data.demo.detection"),
        ("tasks.data.demo_segmentation", "tasks.data.demo.segmentation"),
        ("tasks.data.synthetic", "tasks.data.demo.shapes"),
    ],
)
def test_old_module_names_are_the_new_modules(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


def test_saved_class_paths_resolve() -> None:
    from jsonargparse import ArgumentParser

    from tasks import DemoDetectionDataModule

    parser = ArgumentParser()
    parser.add_argument("--data", type=DemoDetectionDataModule)
    config = parser.parse_object(
        {"data": {"class_path": "tasks.data.demo_detection.DemoDetectionDataModule"}}
    )
    data = parser.instantiate_classes(config).data
    assert type(data) is DemoDetectionDataModule is demo.DemoDetectionDataModule
