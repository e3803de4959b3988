"""The Lightning layer: tasks, data modules and the ``mobilezoo`` command."""

import tasks.quiet  # noqa: F401  (first: filters foreign warnings before they are raised)
from tasks.base import BaseTask
from tasks.checkpointing import ModelCheckpoint
from tasks.classification import ClassificationTask
from tasks.data.cityscapes import CityscapesDataModule
from tasks.data.cityscapes_joint import CityscapesJointDataModule
from tasks.data.coco import COCODataModule
from tasks.data.coco_joint import COCOJointDataModule
from tasks.data.coco_segmentation import COCOSegmentationDataModule
from tasks.data.demo import (
    DemoClassificationDataModule,
    DemoDetectionDataModule,
    DemoMultiTaskDataModule,
    DemoSegmentationDataModule,
)
from tasks.data.imagefolder import ImageFolderDataModule
from tasks.data.voc import VOCSegmentationDataModule
from tasks.detection import DetectionTask
from tasks.multitask import MultiTaskTask
from tasks.multitask_writer import MultiTaskPredictionWriter
from tasks.prediction_writers import (
    ClassificationPredictionWriter,
    DetectionPredictionWriter,
    SegmentationPredictionWriter,
)
from tasks.schedulers import WarmupCosineLR, WarmupExponentialLR, WarmupPolyLR
from tasks.segmentation import SegmentationTask

__all__ = [
    "BaseTask",
    "COCODataModule",
    "COCOJointDataModule",
    "COCOSegmentationDataModule",
    "CityscapesDataModule",
    "CityscapesJointDataModule",
    "ClassificationPredictionWriter",
    "ClassificationTask",
    "DemoClassificationDataModule",
    "DemoDetectionDataModule",
    "DemoMultiTaskDataModule",
    "DemoSegmentationDataModule",
    "DetectionPredictionWriter",
    "DetectionTask",
    "ImageFolderDataModule",
    "ModelCheckpoint",
    "MultiTaskPredictionWriter",
    "MultiTaskTask",
    "SegmentationPredictionWriter",
    "SegmentationTask",
    "VOCSegmentationDataModule",
    "WarmupCosineLR",
    "WarmupExponentialLR",
    "WarmupPolyLR",
]
