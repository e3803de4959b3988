"""The Lightning layer: tasks, data modules and the ``mobilezoo`` command."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tasks.base import BaseTask
from tasks.classification import ClassificationPredictionWriter, ClassificationTask
from tasks.data.demo_classification import DemoClassificationDataModule
from tasks.data.imagefolder import ImageFolderDataModule
from tasks.detection import DetectionPredictionWriter, DetectionTask
from tasks.schedulers import WarmupCosineLR, WarmupExponentialLR, WarmupPolyLR
from tasks.segmentation import SegmentationPredictionWriter, SegmentationTask

__all__ = [
    "BaseTask",
    "ClassificationPredictionWriter",
    "ClassificationTask",
    "DemoClassificationDataModule",
    "DetectionPredictionWriter",
    "DetectionTask",
    "ImageFolderDataModule",
    "SegmentationPredictionWriter",
    "SegmentationTask",
    "WarmupCosineLR",
    "WarmupExponentialLR",
    "WarmupPolyLR",
]
