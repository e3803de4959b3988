"""The peer of the fine-tune benchmark: torchvision's own SSD training code on our features.

``torchvision.models.detection.SSD`` with its ``SSDLiteHead``, ``DefaultBoxGenerator``,
matcher, hard-negative-mining loss, internal resize/normalize transform and
post-processing, trained as torchvision's reference script (``references/detection``,
``--model ssdlite320_mobilenet_v3_large --data-augmentation ssdlite --lr-scheduler
cosineannealinglr --lr 0.15 --batch-size 24 --weight-decay 0.00004`` on 8 GPUs) trains it:
SGD momentum 0.9, the learning rate scaled linearly from 0.15 at a total batch of 192,
linear warm-up from 1/1000 over the first epoch, cosine decay, every layer trained, the
``ssdlite`` augmentation (``transforms.v2`` RandomIoUCrop + flip). The feature extractor is
the same MobileNetV2 + SSDLite extra layers as ``heads.ssdlite_mobilenet_v2``, built from the
same weights, so the two differ only in the training code.
"""

from __future__ import annotations

import functools
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.transforms import v2

from heads.ssdlite import ssdlite_mobilenet_v2
from tasks.data.coco import COCOAnnotations
from tasks.metrics.coco import evaluate_coco

REFERENCE_LR, REFERENCE_BATCH = 0.15, 192  # torchvision's ssdlite320 recipe, 8 GPUs x 24


class SSDLiteFeatures(nn.Module):
    """The six SSDLite feature maps of our detector as the ``OrderedDict`` SSD expects."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        self.backbone, self.extras, self.taps = ours.backbone, ours.extras, ours.taps

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        taps = self.backbone(images)  # as SSDLite.features: two taps, then the extra layers
        maps = [taps[name] for name in self.taps]
        for layer in self.extras:
            maps.append(layer(maps[-1]))
        return OrderedDict((str(i), f) for i, f in enumerate(maps))


def torchvision_ssd(
    num_classes: int, image_size: int, weights_backbone: str | None, padding: str
) -> SSD:
    """torchvision ``SSD`` + ``SSDLiteHead`` (ssdlite320's anchors, norm and thresholds) on
    our MobileNetV2 SSDLite features. ``num_classes`` excludes the background."""
    ours = ssdlite_mobilenet_v2(
        num_classes=num_classes, image_size=image_size, weights_backbone=weights_backbone,
        padding=padding,
    )  # fmt: skip
    features = SSDLiteFeatures(ours)
    with torch.no_grad():
        probe = features.eval()(torch.zeros(1, 3, image_size, image_size))
    features.train()
    channels = [f.shape[1] for f in probe.values()]
    anchors = DefaultBoxGenerator([[2, 3] for _ in channels], min_ratio=0.2, max_ratio=0.95)
    norm = functools.partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    head = SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
    return SSD(
        features, anchors, (image_size, image_size), num_classes + 1, head=head,
        image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], score_thresh=0.001,
        nms_thresh=0.55, detections_per_img=300, topk_candidates=300,
    )  # fmt: skip


class TorchvisionCOCO(Dataset):
    """A COCO split as torchvision's reference reads it: PIL image, ``tv_tensors`` boxes,
    labels 1.. (0 = background), through a ``transforms.v2`` pipeline. Annotations come
    from the project's validated reader (the same training targets as ours)."""

    def __init__(self, image_dir: Path, annotations: COCOAnnotations, transform: Any) -> None:
        self.image_dir, self.annotations, self.transform = image_dir, annotations, transform
        self.image_ids = sorted(annotations.images)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]]:
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        with Image.open(self.image_dir / info["file_name"]) as img:
            image = img.convert("RGB")
        boxes = tv_tensors.BoundingBoxes(
            torch.as_tensor(self.annotations.boxes[image_id]).reshape(-1, 4),
            format="XYXY", canvas_size=(image.height, image.width),
        )  # fmt: skip
        target = {
            "boxes": boxes,
            "labels": torch.as_tensor(self.annotations.labels[image_id]) + 1,
            "image_id": image_id,
        }
        return self.transform(image, target)


def ssdlite_train_transform() -> v2.Compose:
    """torchvision's reference ``ssdlite`` training augmentation."""
    return v2.Compose([
        v2.RandomIoUCrop(), v2.RandomHorizontalFlip(p=0.5), v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip


def eval_transform() -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def _collate(batch: list[Any]) -> tuple[Any, ...]:
    return tuple(zip(*batch, strict=True))


def finetune_torchvision(
    root: Path,
    steps: int,
    image_size: int,
    batch_size: int,
    weights_backbone: str | None,
    seed: int,
    num_workers: int = 2,
    padding: str = "tf",
) -> dict[str, float]:
    """Train torchvision's SSD for ``steps`` steps on ``root``'s train split, evaluate on
    val with pycocotools. Returns ``map``, ``map_50``, ``wall_s`` (set-up, training and
    evaluation) and ``images_per_s`` (training images / ``wall_s``)."""
    torch.manual_seed(seed)
    train_ann = COCOAnnotations(root / "annotations" / "instances_train.json")
    val_ann = COCOAnnotations(root / "annotations" / "instances_val.json")
    start = time.perf_counter()
    model = torchvision_ssd(len(train_ann.category_ids), image_size, weights_backbone, padding)
    train = TorchvisionCOCO(root / "train", train_ann, ssdlite_train_transform())
    loader = DataLoader(
        train, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=_collate,
        num_workers=num_workers, persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    lr = REFERENCE_LR * batch_size / REFERENCE_BATCH
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=4e-5)
    warmup = min(1000, len(loader) - 1)  # the reference: linear warm-up over epoch 0

    def factor(step: int) -> float:
        cosine = 0.5 * (1 + math.cos(math.pi * step / steps))
        if step < warmup:
            return cosine * (0.001 + (1 - 0.001) * step / warmup)
        return cosine

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model.train()
    step = 0
    while step < steps:
        for images, targets in loader:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step >= steps:
                break
    stats = evaluate_torchvision(model, root / "val", val_ann)
    wall = time.perf_counter() - start  # as for the CLI run: set-up, training, evaluation
    return {**stats, "wall_s": wall, "images_per_s": steps * batch_size / wall}


@torch.no_grad()
def evaluate_torchvision(model: SSD, image_dir: Path, annotations: COCOAnnotations) -> dict:
    """pycocotools box AP of ``model`` (boxes in original pixels, from SSD's transform)."""
    model.eval()
    dataset = TorchvisionCOCO(image_dir, annotations, eval_transform())
    results = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        det = model([image])[0]
        xywh = torch.cat([det["boxes"][:, :2], det["boxes"][:, 2:] - det["boxes"][:, :2]], 1)
        for box, label, score in zip(
            xywh.tolist(), det["labels"].tolist(), det["scores"].tolist(), strict=True
        ):
            results.append({
                "image_id": target["image_id"], "bbox": box, "score": score,
                "category_id": annotations.category_ids[label - 1],
            })  # fmt: skip
    stats = evaluate_coco(annotations.ground_truth, results)
    return {"map": stats["map"], "map_50": stats["map_50"]}
