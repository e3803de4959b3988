"""The Lightning layer: tasks, data modules and the ``mobilezoo`` command.

At the top, the four tasks and what they share (``base``, ``schedulers``, ``callbacks``);
in sub-packages, one per concern: ``data`` (data modules and transforms), ``checkpoints``
(reading untrusted checkpoints, writing them safely), ``metrics``, ``viz`` (drawings,
figures, plots), ``writers`` (``predict`` outputs), ``export`` (ONNX / OpenVINO) and
``cli`` (the command, on top of everything else).

Its names load on first use (PEP 562): ``tasks.DetectionTask`` and a config's
``class_path: tasks.DetectionTask`` import ``tasks.detection`` then, and
``from tasks.export import load_exported`` imports no task, data module or Lightning.
"""

from __future__ import annotations

import tasks.quiet  # noqa: F401  (first: filters foreign warnings before they are raised)
from tasks.lazy_names import lazy_names

#: public name -> the module that defines it
_MODULES = {
    "BaseTask": "tasks.base",
    "COCODataModule": "tasks.data.coco",
    "COCOJointDataModule": "tasks.data.coco_joint",
    "COCOSegmentationDataModule": "tasks.data.coco_segmentation",
    "CityscapesDataModule": "tasks.data.cityscapes",
    "CityscapesJointDataModule": "tasks.data.cityscapes_joint",
    "ClassificationPredictionWriter": "tasks.writers.predictions",
    "ClassificationTask": "tasks.classification",
    "DemoClassificationDataModule": "tasks.data.demo",
    "DemoDetectionDataModule": "tasks.data.demo",
    "DemoMultiTaskDataModule": "tasks.data.demo",
    "DemoSegmentationDataModule": "tasks.data.demo",
    "DetectionPredictionWriter": "tasks.writers.predictions",
    "DetectionTask": "tasks.detection",
    "ImageFolderDataModule": "tasks.data.imagefolder",
    "ModelCheckpoint": "tasks.checkpoints.model_checkpoint",
    "MultiTaskPredictionWriter": "tasks.writers.multitask",
    "MultiTaskTask": "tasks.multitask",
    "SegmentationPredictionWriter": "tasks.writers.predictions",
    "SegmentationTask": "tasks.segmentation",
    "VOCSegmentationDataModule": "tasks.data.voc",
    "WarmupCosineLR": "tasks.schedulers",
    "WarmupExponentialLR": "tasks.schedulers",
    "WarmupPolyLR": "tasks.schedulers",
}
__all__ = sorted(_MODULES)

__getattr__, __dir__ = lazy_names("tasks", _MODULES)
