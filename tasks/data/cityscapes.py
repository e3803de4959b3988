"""Cityscapes fine annotations, as downloaded (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip).

Layout::

    <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

The ``*_labelIds.png`` masks hold the 34 label ids of the Cityscapes scripts (0..33); the
19 evaluated classes get train ids 0..18 through ``LABEL_ID_TO_TRAIN_ID``, every other id
becomes 255 (ignored), exactly as ``cityscapesscripts/helpers/labels.py`` defines them.

Checked at setup: every image is named ``<city>_<6 digits>_<6 digits>_leftImg8bit.png``
inside its ``<city>`` folder, has its mask, and every ``*_gtFine_labelIds.png`` has its
image (a lost image would silently shrink the evaluated set). Other files are ignored,
counted and logged. When read, a mask value that is not a label id (0..33) or 255 is a
``BadSampleError`` naming the file, never silently mapped to "ignored".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.base import LoaderOptions
from tasks.data.seg_transforms import IGNORE_INDEX
from tasks.data.segmentation import SegmentationDataModule
from tasks.data.validate import AnnotationError, Repairs

#: (label id, name, train id) of the 34 label ids; train id 255 = not evaluated
CITYSCAPES_LABELS: tuple[tuple[int, str, int], ...] = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255),
    (3, "out of roi", 255), (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255),
    (7, "road", 0), (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255),
    (11, "building", 2), (12, "wall", 3), (13, "fence", 4), (14, "guard rail", 255),
    (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8),
    (22, "terrain", 9), (23, "sky", 10), (24, "person", 11), (25, "rider", 12),
    (26, "car", 13), (27, "truck", 14), (28, "bus", 15), (29, "caravan", 255),
    (30, "trailer", 255), (31, "train", 16), (32, "motorcycle", 17), (33, "bicycle", 18),
)  # fmt: skip

CITYSCAPES_CLASSES = tuple(
    name for _, name, _ in sorted(
        (x for x in CITYSCAPES_LABELS if x[2] != IGNORE_INDEX), key=lambda x: x[2]
    )
)  # fmt: skip

#: colours of the 19 train ids (cityscapesscripts), for predicted masks
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip


def label_id_to_train_id() -> np.ndarray:
    """``uint8 [256]`` lookup table: label id -> train id; ids outside 0..33 map to 255
    (``SegmentationDataset`` then accepts them as void)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for label_id, _, train_id in CITYSCAPES_LABELS:
        table[label_id] = train_id
    return table


LABEL_ID_TO_TRAIN_ID = label_id_to_train_id()

#: raw values a ``*_labelIds.png`` may hold: the label ids 0..33, and 255 as void
CITYSCAPES_MASK_VALUES = np.zeros(256, dtype=bool)
CITYSCAPES_MASK_VALUES[[label_id for label_id, _, _ in CITYSCAPES_LABELS]] = True
CITYSCAPES_MASK_VALUES[IGNORE_INDEX] = True

IMAGE_SUFFIX, MASK_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png"


def cityscapes_palette() -> list[int]:
    """Flat ``[r, g, b] * 256`` palette: train-id colours, black elsewhere."""
    palette = [c for rgb in CITYSCAPES_COLORS for c in rgb]
    return palette + [0] * (768 - len(palette))


class CityscapesDataModule(SegmentationDataModule):
    """Cityscapes semantic segmentation, 19 train ids (``gtFine``, ``*_labelIds.png``).

    Args:
        root: folder holding ``leftImg8bit`` and ``gtFine``.
        train_split: ``train`` (2,975 images).
        val_split: ``val`` (500 images), used by validate and test (``test`` masks are
            not public).
        crop_size: training crop (TF DeepLab: 769).
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
        **kwargs: ``min_scale``, ``max_scale``, ``flip``, ``mean``, ``std``,
            ``predict_dir`` of ``SegmentationDataModule``.
    """

    class_names = CITYSCAPES_CLASSES
    label_map = LABEL_ID_TO_TRAIN_ID
    valid_mask_values = CITYSCAPES_MASK_VALUES
    palette = cityscapes_palette()

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        crop_size: int | tuple[int, int] = 769,
        loader: LoaderOptions = LoaderOptions(batch_size=8, num_workers=4),
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, loader=loader, **kwargs)
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split

    def samples(self, split: str) -> list[tuple[Path, Path]]:
        """``(image, mask)`` pairs of ``split``, every name checked (see the module doc).

        Raises:
            FileNotFoundError: the split folder, its images, or a mask is missing.
            AnnotationError: an image name that does not follow the Cityscapes pattern or
                its city folder, or a mask without its image.
        """
        image_dir = self.root / "leftImg8bit" / split
        mask_dir = self.root / "gtFine" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(
                f"Cityscapes images not found: expected {image_dir}/<city>/"
                "*_leftImg8bit.png (from leftImg8bit_trainvaltest.zip)"
            )
        repairs = Repairs(image_dir)
        images = self._images(image_dir, repairs)
        if not images:
            raise FileNotFoundError(f"no */*_leftImg8bit.png files in {image_dir}")
        pairs, missing = [], []
        for image in images:
            stem = image.name[: -len(IMAGE_SUFFIX)]
            mask = mask_dir / image.parent.name / f"{stem}{MASK_SUFFIX}"
            if mask.is_file():
                pairs.append((image, mask))
            else:
                missing.append(str(mask))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(images)} images of split {split!r} have no mask, "
                f"e.g. {missing[:3]} (from gtFine_trainvaltest.zip)"
            )
        known = {mask for _, mask in pairs}
        for mask in sorted(mask_dir.glob(f"*/*{MASK_SUFFIX}")):
            if mask not in known:
                image = image_dir / mask.parent.name / mask.name.replace(MASK_SUFFIX, IMAGE_SUFFIX)
                raise AnnotationError(
                    mask, "file", "image",
                    f"is missing: expected {image} (the split would silently lose it)",
                )  # fmt: skip
        repairs.report()
        return pairs

    @staticmethod
    def _images(image_dir: Path, repairs: Repairs) -> list[Path]:
        """Sorted ``<city>/<city>_<seq>_<frame>_leftImg8bit.png`` files; names checked."""
        images = []
        for entry in sorted(image_dir.iterdir()):
            if not entry.is_dir():
                repairs.add("files outside a city folder ignored")
                continue
            pattern = re.compile(re.escape(entry.name) + r"_\d{6}_\d{6}" + re.escape(IMAGE_SUFFIX))
            for path in sorted(entry.iterdir()):
                if not path.name.endswith(IMAGE_SUFFIX):
                    repairs.add(f"files not named *{IMAGE_SUFFIX} ignored")
                elif not pattern.fullmatch(path.name):
                    raise AnnotationError(
                        path, "file", "name",
                        f"must be {entry.name}_<6 digits>_<6 digits>{IMAGE_SUFFIX} (the city is "
                        "its folder's name)",
                    )  # fmt: skip
                else:
                    images.append(path)
        return images
