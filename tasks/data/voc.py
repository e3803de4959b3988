"""PASCAL VOC 2012 segmentation, with the SBD "trainaug" extension, as downloaded.

Layout (``root`` is the folder holding ``VOCdevkit``, or the ``VOC2012`` folder itself)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png        palette PNG, value = class, 255 = void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png     SBD + VOC masks (trainaug), optional

The trainaug set is every image with a ``SegmentationClassAug`` mask (or those of a list
file) plus VOC ``train``, minus every VOC ``val`` image: 10,582 images for the official
downloads, with no validation image leaking into training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tasks.data.base import LoaderOptions
from tasks.data.segmentation import SegmentationDataModule
from tasks.data.validate import AnnotationError

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def find_voc2012(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root``, ``root/VOC2012`` or
    ``root/VOCdevkit/VOC2012``), recognised by its ``JPEGImages`` folder."""
    root = Path(root).expanduser()
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no PASCAL VOC 2012 under {root}: expected {root}/VOCdevkit/VOC2012/JPEGImages "
        "(the layout of VOCtrainval_11-May-2012.tar)"
    )


def read_id_list(path: Path) -> list[str]:
    """Image ids of a split list: one per line; a line may also be an image path followed
    by a mask path (the common trainaug list format), whose file stem is taken.

    Blank lines are skipped. Errors name the file, the line and the field: a line with
    more than two fields, an image and a mask path of different images, or an id listed
    twice (an image evaluated or trained on twice would weigh double).

    Raises:
        FileNotFoundError: the list does not exist.
        AnnotationError: a malformed line, a duplicate id, or no id at all.
    """
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise AnnotationError(path, "file", "(text)", f"is not UTF-8 text ({err})") from err
    ids: list[str] = []
    line_of: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"line {number}"
        if len(fields) > 2:
            raise AnnotationError(
                path, where, "(line)", f"must be 'id' or 'image mask', got {len(fields)} fields"
            )
        stem = Path(fields[0]).stem
        if not stem or stem.startswith("."):
            raise AnnotationError(path, where, "image", f"holds no image id: {fields[0]!r}")
        if len(fields) == 2 and Path(fields[1]).stem != stem:
            raise AnnotationError(
                path, where, "mask",
                f"{fields[1]!r} is not the mask of image {fields[0]!r} (file stems differ)",
            )  # fmt: skip
        first = line_of.setdefault(stem, number)
        if first != number:
            raise AnnotationError(path, where, "image", f"id {stem!r} is also on line {first}")
        ids.append(stem)
    if not ids:
        raise AnnotationError(path, "file", "(lines)", "the split list is empty")
    return ids


class VOCSegmentationDataModule(SegmentationDataModule):
    """PASCAL VOC 2012 semantic segmentation (21 classes, 255 = void).

    Args:
        root: folder with ``VOCdevkit/VOC2012`` (or the ``VOC2012`` folder itself).
        train_split: list in ``ImageSets/Segmentation`` used for training (``train``).
        val_split: list used by validate and test (``val``: 1,449 images).
        sbd: train on trainaug: ``train_split`` plus the SBD images of ``sbd_dir``,
            without any ``val_split`` image (10,582 images with the official data).
        sbd_dir: folder of the trainaug masks (default ``VOC2012/SegmentationClassAug``).
        sbd_list: optional list file (ids, or ``image mask`` paths per line) restricting the
            SBD images; default: every PNG in ``sbd_dir``.
        loader: batch sizes, workers, bad-sample policy (``LoaderOptions``).
        **kwargs: ``crop_size``, ``min_scale``, ``max_scale``, ``flip``, ``mean``, ``std``,
            ``predict_dir`` of ``SegmentationDataModule``, whose defaults are DeepLab's
            for VOC (crop 513, scale 0.5 to 2.0).
    """

    class_names = VOC_CLASSES

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        sbd: bool = False,
        sbd_dir: str | None = None,
        sbd_list: str | None = None,
        loader: LoaderOptions = LoaderOptions(batch_size=16, num_workers=4),
        **kwargs: Any,
    ) -> None:
        super().__init__(loader=loader, **kwargs)
        self.root = Path(root).expanduser()
        self.train_split, self.val_split = train_split, val_split
        self.sbd, self.sbd_dir, self.sbd_list = sbd, sbd_dir, sbd_list

    @property
    def voc_dir(self) -> Path:
        return find_voc2012(self.root)

    def split_ids(self, split: str) -> list[str]:
        """Ids of ``ImageSets/Segmentation/<split>.txt``."""
        return read_id_list(self.voc_dir / "ImageSets" / "Segmentation" / f"{split}.txt")

    def trainaug_ids(self) -> list[str]:
        """``train_split`` + SBD ids, minus ``val_split`` ids, sorted, without duplicates."""
        aug_dir = self._aug_dir()
        if self.sbd_list is not None:
            sbd_ids = read_id_list(Path(self.sbd_list).expanduser())
        else:
            sbd_ids = [p.stem for p in aug_dir.glob("*.png")]
        val = set(self.split_ids(self.val_split))
        ids = set(sbd_ids) | set(self.split_ids(self.train_split))
        leaked = len(ids & val)
        ids -= val
        log.info(
            "VOC trainaug: %d images (%d SBD ids, %d val images left out)",
            len(ids), len(sbd_ids), leaked,
        )  # fmt: skip
        return sorted(ids)

    def _aug_dir(self) -> Path:
        aug = (
            Path(self.sbd_dir).expanduser()
            if self.sbd_dir
            else self.voc_dir / "SegmentationClassAug"
        )
        if not aug.is_dir():
            raise FileNotFoundError(
                f"sbd=True needs the trainaug masks folder {aug} (SegmentationClassAug, one "
                "PNG per image, value = class); set data.sbd_dir or data.sbd=false"
            )
        return aug

    def samples(self, split: str) -> list[tuple[Path, Path]]:
        voc = self.voc_dir
        training = split == self.train_split
        if training and self.sbd:
            ids, mask_dirs = self.trainaug_ids(), [self._aug_dir(), voc / "SegmentationClass"]
        else:
            ids, mask_dirs = self.split_ids(split), [voc / "SegmentationClass"]
        pairs, missing = [], []
        for image_id in ids:
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            mask = next(
                (d / f"{image_id}.png" for d in mask_dirs if (d / f"{image_id}.png").is_file()),
                None,
            )
            if mask is None or not image.is_file():
                missing.append(str(image if mask is not None else mask_dirs[0] / f"{image_id}.png"))
            else:
                pairs.append((image, mask))
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(ids)} samples of split {split!r} lack an image or "
                f"mask file, e.g. {missing[:3]} (masks searched in {[str(d) for d in mask_dirs]})"
            )
        return pairs
