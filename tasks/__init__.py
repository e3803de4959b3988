"""The Lightning layer: tasks, data modules and the ``mobilezoo`` command."""

import tasks.quiet  # noqa: F401  (first: filters foreign warnings before they are raised)
from tasks.base import BaseTask
from tasks.checkpointing import ModelCheckpoint
from tasks.classification import ClassificationPredictionWriter, ClassificationTask
from tasks.data.cityscapes import CityscapesDataModule
from tasks.data.coco import COCODataModule
from tasks.data.demo import (
    DemoClassificationDataModule,
    DemoDetectionDataModule,
    DemoSegmentationDataModule,
)
from tasks.data.imagefolder import ImageFolderDataModule
from tasks.data.voc import VOCSegmentationDataModule
from tasks.detection import DetectionPredictionWriter, DetectionTask
from tasks.schedulers import WarmupCosineLR, WarmupExponentialLR, WarmupPolyLR
from tasks.segmentation import SegmentationPredictionWriter, SegmentationTask

__all__ = [
    "BaseTask",
    "COCODataModule",
    "CityscapesDataModule",
    "ClassificationPredictionWriter",
    "ClassificationTask",
    "DemoClassificationDataModule",
    "DemoDetectionDataModule",
    "DemoSegmentationDataModule",
    "DetectionPredictionWriter",
    "DetectionTask",
    "ImageFolderDataModule",
    "ModelCheckpoint",
    "SegmentationPredictionWriter",
    "SegmentationTask",
    "VOCSegmentationDataModule",
    "WarmupCosineLR",
    "WarmupExponentialLR",
    "WarmupPolyLR",
]
