"""Generated demo data sets in the native layouts of the real ones, made on first use:
shapes for classification (ImageFolder), detection (COCO), segmentation (VOC), and
detection + segmentation together (COCO with polygons and RLE)."""

from tasks.data.demo.classification import DemoClassificationDataModule, make_classification_demo
from tasks.data.demo.detection import DemoDetectionDataModule, make_detection_demo
from tasks.data.demo.multitask import DemoMultiTaskDataModule, make_multitask_demo
from tasks.data.demo.segmentation import DemoSegmentationDataModule, make_segmentation_demo
from tasks.data.demo.shapes import SceneOptions

__all__ = [
    "DemoClassificationDataModule",
    "DemoDetectionDataModule",
    "DemoMultiTaskDataModule",
    "DemoSegmentationDataModule",
    "SceneOptions",
    "make_classification_demo",
    "make_detection_demo",
    "make_multitask_demo",
    "make_segmentation_demo",
]
