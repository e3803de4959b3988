"""Category names of the label spaces the released weights use (in output order)."""

from __future__ import annotations

#: PASCAL VOC 2012 segmentation, 21 classes (0 = background, 255 = void)
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

#: Cityscapes, the 19 evaluated train ids
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip


def coco_category_ids() -> list[int]:
    """The 80 COCO category ids (1..90 with gaps), in contiguous-label order."""
    from torchvision.models._meta import _COCO_CATEGORIES

    return [i for i, name in enumerate(_COCO_CATEGORIES) if i > 0 and name != "N/A"]


def coco_categories() -> list[str]:
    """The 80 COCO category names, contiguous labels 0..79 (torchvision's names)."""
    from torchvision.models._meta import _COCO_CATEGORIES

    return [_COCO_CATEGORIES[i] for i in coco_category_ids()]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (sorted synset) order."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)
