"""The Lightning layer: tasks, data modules and the ``mobilezoo`` command.

Its names load on first use (PEP 562): ``tasks.DetectionTask`` and a config's
``class_path: tasks.DetectionTask`` import ``tasks.detection`` then, and
``from tasks.export import load_exported`` imports no task, data module or Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

import tasks.quiet  # noqa: F401  (first: filters foreign warnings before they are raised)

#: public name -> the module that defines it
_MODULES = {
    "BaseTask": "tasks.base",
    "COCODataModule": "tasks.data.coco",
    "COCOJointDataModule": "tasks.data.coco_joint",
    "COCOSegmentationDataModule": "tasks.data.coco_segmentation",
    "CityscapesDataModule": "tasks.data.cityscapes",
    "CityscapesJointDataModule": "tasks.data.cityscapes_joint",
    "ClassificationPredictionWriter": "tasks.prediction_writers",
    "ClassificationTask": "tasks.classification",
    "DemoClassificationDataModule": "tasks.data.demo",
    "DemoDetectionDataModule": "tasks.data.demo",
    "DemoMultiTaskDataModule": "tasks.data.demo",
    "DemoSegmentationDataModule": "tasks.data.demo",
    "DetectionPredictionWriter": "tasks.prediction_writers",
    "DetectionTask": "tasks.detection",
    "ImageFolderDataModule": "tasks.data.imagefolder",
    "ModelCheckpoint": "tasks.checkpointing",
    "MultiTaskPredictionWriter": "tasks.multitask_writer",
    "MultiTaskTask": "tasks.multitask",
    "SegmentationPredictionWriter": "tasks.prediction_writers",
    "SegmentationTask": "tasks.segmentation",
    "VOCSegmentationDataModule": "tasks.data.voc",
    "WarmupCosineLR": "tasks.schedulers",
    "WarmupExponentialLR": "tasks.schedulers",
    "WarmupPolyLR": "tasks.schedulers",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'tasks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULES[name]), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
