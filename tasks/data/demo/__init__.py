"""Generated demo data sets in the native layouts of the real ones, made on first use:
shapes for classification (ImageFolder), detection (COCO) and segmentation (VOC)."""

from tasks.data.demo.classification import DemoClassificationDataModule, make_classification_demo
from tasks.data.demo.detection import DemoDetectionDataModule, make_detection_demo
from tasks.data.demo.segmentation import DemoSegmentationDataModule, make_segmentation_demo

__all__ = [
    "DemoClassificationDataModule",
    "DemoDetectionDataModule",
    "DemoSegmentationDataModule",
    "make_classification_demo",
    "make_detection_demo",
    "make_segmentation_demo",
]
