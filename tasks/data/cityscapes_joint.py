"""Cityscapes with both targets, for driving perception: boxes of the 8 "thing" classes and
the 19-train-id mask, from the fine annotations as downloaded.

Layout (``gtFine_trainvaltest.zip`` holds both PNGs next to each other)::

    <root>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png      -> mask (train ids)
    <root>/gtFine/<split>/<city>/<stem>_gtFine_instanceIds.png   -> boxes

In ``*_instanceIds.png`` (int32) a pixel of object ``k`` of label id ``c`` holds
``c * 1000 + k``; a pixel of a thing class without a single instance (a "group", e.g.
``cargroup``) holds ``c``. Each instance gives one box (its pixels' tight box) with the
detection label of its train id (person, rider, car, truck, bus, train, motorcycle,
bicycle -> 0..7); groups become crowd boxes, ignored by the COCO evaluation like COCO's
``iscrowd`` regions. Caravan and trailer are not evaluated by Cityscapes (train id 255) and
give no box.

SSD augmentation (zoom-out, min-IoU crop, flip, photometric) moves the mask with the image
and boxes; the zoom-out canvas is void (255) in the mask, not road. The image is resized
to the square ``image_size`` (SSD's rule); evaluation masks stay at 2048x1024 and the task
upsamples its logits to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tasks.data.base import LoaderOptions
from tasks.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_LABELS,
    CITYSCAPES_MASK_VALUES,
    LABEL_ID_TO_TRAIN_ID,
    cityscapes_palette,
)
from tasks.data.detection import DetectionDataModule
from tasks.data.io import BadSampleError, read_image, read_label_png, read_single_channel

#: train ids of the classes with instances, in detection-label order
THING_TRAIN_IDS = (11, 12, 13, 14, 15, 16, 17, 18)
THING_CLASSES = tuple(CITYSCAPES_CLASSES[t] for t in THING_TRAIN_IDS)
#: label id -> detection label (0..7), -1 for stuff and non-evaluated classes
_LABEL_ID_TO_THING = np.full(256, -1, dtype=np.int64)
for _label_id, _, _train_id in CITYSCAPES_LABELS:
    if _train_id in THING_TRAIN_IDS:
        _LABEL_ID_TO_THING[_label_id] = THING_TRAIN_IDS.index(_train_id)


def boxes_from_instance_ids(instance_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Boxes of one ``*_instanceIds.png`` (``[H, W]`` int).

    Returns:
        ``boxes`` ``[N, 4]`` float32 (x1, y1, x2, y2, pixel edges), ``labels`` ``[N]``
        int64 (0..7), ``crowd`` ``[N]`` bool (a group region), ``areas`` ``[N]`` pixels.
    """
    boxes, labels, crowd, areas = [], [], [], []
    for value in np.unique(instance_ids):
        value = int(value)
        label_id = value // 1000 if value >= 1000 else value
        if label_id > 255 or _LABEL_ID_TO_THING[label_id] < 0:
            continue
        ys, xs = np.nonzero(instance_ids == value)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(int(_LABEL_ID_TO_THING[label_id]))
        crowd.append(value < 1000)
        areas.append(len(xs))
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64),
        "crowd": np.asarray(crowd, dtype=bool),
        "areas": np.asarray(areas, dtype=np.float64),
    }


def read_label_ids(path: Path) -> np.ndarray:
    """A ``*_gtFine_labelIds.png`` as ``uint8 [H, W]`` train ids.

    Raises:
        BadSampleError: unreadable, not single-channel, or a value that is no label id (it
            would be read as void, or past the table's end).
    """
    raw = read_label_png(path)
    _check_label_ids(raw, path, "labelIds")
    return LABEL_ID_TO_TRAIN_ID[raw]


def read_instance_ids(path: Path) -> np.ndarray:
    """A ``*_gtFine_instanceIds.png`` as ``int64 [H, W]``: each value a label id, or
    ``label id * 1000 + k`` for instance ``k``.

    Raises:
        BadSampleError: unreadable, not single-channel, or a value of neither form (a
            negative value indexed the label table from its end).
    """
    raw, _ = read_single_channel(path, "instanceIds")
    ids = raw.astype(np.int64)
    label_ids = np.where(ids >= 1000, ids // 1000, ids)
    if ids.size and (ids.min() < 0 or label_ids.max() > 255):
        raise BadSampleError(
            f"{path}: instanceIds values must be a label id or label id * 1000 + k, found "
            f"{int(ids.min())}..{int(ids.max())}"
        )
    _check_label_ids(label_ids, path, "instanceIds")
    return ids


def _check_label_ids(label_ids: np.ndarray, path: Path, what: str) -> None:
    bad = ~CITYSCAPES_MASK_VALUES[label_ids]
    if bad.any():
        values = sorted({int(v) for v in np.unique(label_ids[bad])})[:10]
        raise BadSampleError(
            f"{path}: {what} values {values} are not Cityscapes label ids (0..33, 255 = void)"
        )


def cityscapes_triplets(root: Path, split: str) -> list[tuple[Path, Path, Path]]:
    """``(image, labelIds, instanceIds)`` of every image of ``split``, sorted."""
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"Cityscapes images not found: expected {image_dir}/<city>/*_leftImg8bit.png "
            "(from leftImg8bit_trainvaltest.zip)"
        )
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise FileNotFoundError(f"no */*_leftImg8bit.png files in {image_dir}")
    out, missing = [], []
    for image in images:
        stem = image.name[: -len("_leftImg8bit.png")]
        gt = root / "gtFine" / split / image.parent.name
        pair = (gt / f"{stem}_gtFine_labelIds.png", gt / f"{stem}_gtFine_instanceIds.png")
        missing += [str(p) for p in pair if not p.is_file()]
        out.append((image, *pair))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} annotation files of split {split!r} are missing, e.g. "
            f"{missing[:3]} (from gtFine_trainvaltest.zip)"
        )
    return out


class CityscapesJointDataset(Dataset):
    """Images with boxes and train-id masks of one Cityscapes split.

    Args:
        triplets: ``(image, labelIds, instanceIds)`` paths.
        transform: albumentations pipeline with ``bboxes`` (pascal_voc) and ``labels``.
        eval_masks: keep the mask at the size on disk (evaluation).

    Returns ``(image [3, S, S], target)`` like ``COCOJointDataset``: ``boxes``, ``labels``,
    ``image_id`` (1-based position in the sorted split), ``orig_size``, ``mask``.
    """

    def __init__(
        self,
        triplets: list[tuple[Path, Path, Path]],
        transform: A.Compose,
        eval_masks: bool = False,
    ) -> None:
        self.triplets = triplets
        self.transform = transform
        self.eval_masks = eval_masks

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, label_path, instance_path = self.triplets[index]
        image = read_image(image_path)
        mask = read_label_ids(label_path)
        instances = read_instance_ids(instance_path)
        if mask.shape != image.shape[:2] or instances.shape != image.shape[:2]:
            raise BadSampleError(
                f"{image_path}: image {image.shape[:2]}, labelIds {mask.shape} and "
                f"instanceIds {instances.shape} differ in size"
            )
        objects = boxes_from_instance_ids(instances)
        keep = ~objects["crowd"]
        extra = {}
        if not self.eval_masks:
            # Shift by one so the zoom-out canvas (filled with 0) comes back as void.
            extra = {"mask": (mask.astype(np.uint16) + 1).astype(np.uint8)}
        out = self.transform(
            image=image, bboxes=objects["boxes"][keep], labels=objects["labels"][keep], **extra
        )
        # Undo the shift: 0 (canvas) -> 255, k + 1 -> k.
        final = mask if self.eval_masks else (out["mask"].astype(np.int16) - 1).astype(np.uint8)
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.float64).round()).long(),
            "image_id": torch.tensor(index + 1, dtype=torch.int64),
            "orig_size": torch.tensor(image.shape[:2], dtype=torch.int64),
            "mask": torch.from_numpy(np.ascontiguousarray(final)).long(),
        }
        chw = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return chw.float(), target


class CityscapesJointDataModule(DetectionDataModule):
    """Cityscapes boxes (8 thing classes) + masks (19 train ids) for ``MultiTaskTask``.

    Args:
        root: folder holding ``leftImg8bit`` and ``gtFine``.
        train_split, val_split: ``train`` (2,975 images) and ``val`` (500; also ``test``).
        image_size: square model input size.
        zoom_out_ratio: largest zoom-out canvas ratio of the ``"ssd"`` augmentation.
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
        **kwargs: ``augmentation``, ``mean``, ``std``, ``predict_dir`` of
            ``DetectionDataModule``.

    Exposes ``num_classes`` (8), ``category_ids`` (1..8), ``class_names``,
    ``num_seg_classes`` (19), ``seg_class_names``, ``palette`` and ``ground_truth(stage)``
    (a COCO dict of the evaluated split's boxes, groups as crowd).
    """

    class_names = list(THING_CLASSES)
    category_ids = list(range(1, len(THING_CLASSES) + 1))
    num_classes = len(THING_CLASSES)
    seg_class_names = list(CITYSCAPES_CLASSES)
    num_seg_classes = len(CITYSCAPES_CLASSES)
    palette = cityscapes_palette()

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        image_size: int = 512,
        zoom_out_ratio: float = 2.0,
        loader: LoaderOptions = LoaderOptions(batch_size=16, num_workers=4),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_size=image_size, zoom_out_ratio=zoom_out_ratio, loader=loader, **kwargs
        )
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self._ground_truth: dict[str, dict[str, Any]] = {}

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._datasets["train"] = CityscapesJointDataset(
                cityscapes_triplets(self.root, self.train_split), self.train_transform()
            )
        for name in ("validate", "test"):
            if stage == name or (stage == "fit" and name == "validate"):
                self._datasets[name] = CityscapesJointDataset(
                    cityscapes_triplets(self.root, self.val_split),
                    self.eval_transform(),
                    eval_masks=True,
                )

    def ground_truth(self, stage: str) -> dict[str, Any]:
        """COCO dict of the boxes of the split that ``stage`` is scored on (read once)."""
        if self.val_split not in self._ground_truth:
            images, annotations = [], []
            for i, (image, _, instance_path) in enumerate(
                cityscapes_triplets(self.root, self.val_split), start=1
            ):
                ids = read_instance_ids(instance_path)
                images.append(
                    {
                        "id": i,
                        "file_name": str(image),
                        "height": ids.shape[0],
                        "width": ids.shape[1],
                    }
                )
                obj = boxes_from_instance_ids(ids)
                for box, label, crowd, area in zip(
                    obj["boxes"].tolist(), obj["labels"].tolist(), obj["crowd"], obj["areas"],
                    strict=True,
                ):  # fmt: skip
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i,
                            "category_id": label + 1,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "area": float(area),
                            "iscrowd": int(crowd),
                        }
                    )
            categories = [
                {"id": i + 1, "name": name, "supercategory": "thing"}
                for i, name in enumerate(THING_CLASSES)
            ]
            self._ground_truth[self.val_split] = {
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
        return self._ground_truth[self.val_split]
