"""Training-step and data-loading throughput, COCO evaluation time, matmul peak: the
measurements that ``benchmarks.suite``, ``benchmarks.training`` and ``benchmarks.gpu`` put in
their tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.timing import median_ms


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Measured fp32 throughput (GFLOP/s, 2 FLOP per multiply-add): the faster of a
    ``size`` x ``size`` matrix multiply (``torch.mm``: MKL) and the same product as a 1x1
    convolution over a channels-last ``size``-channel map (oneDNN, the convolutions'
    library, faster than MKL on some CPUs)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    conv = nn.Conv2d(size, size, 1, bias=False).eval().to(memory_format=torch.channels_last)
    side = max(size // 32, 1)
    x = torch.randn(1, size, side, side).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        mm = median_ms(lambda: a @ b, warmup=3, repeats=repeats) / 1e3
        conv_s = median_ms(lambda: conv(x), warmup=3, repeats=repeats) / 1e3
    return max(2 * size**3 / mm, 2 * size * size * side * side / conv_s) / 1e9


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs' time spent busy over the next ``seconds`` (``/proc/stat``),
    by whatever runs on the machine; ``None`` where ``/proc/stat`` does not exist."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def random_targets(
    batch: int, size: int, labels: int, offset: int, device: torch.device | str = "cpu"
) -> list[dict[str, Tensor]]:
    """Fixed (seeded) targets: 3 boxes per image inside ``size`` x ``size``, labels in
    ``offset .. offset + labels - 1``, on ``device``."""
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = torch.rand(3, 2, generator=g) * size * 0.3 + size * 0.1
        out.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1),
                "labels": torch.randint(0, labels, (3,), generator=g) + offset,
            }
        )
    return [{k: v.to(device) for k, v in t.items()} for t in out]


def _loss_fn(
    kind: str, model: nn.Module, peer: bool, size: int, batch: int, channels_last: bool = False
) -> Callable:
    """A closure computing one training loss of ``model`` on fixed random data (images in
    channels-last memory format when ``channels_last``)."""
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if kind == "classifier":
        y = torch.randint(0, 1000, (batch,))
        return lambda: F.cross_entropy(model(x), y)
    if kind == "segmenter":
        y = torch.randint(0, 21, (batch, size, size))
        if peer:
            return lambda: F.cross_entropy(model(x)["out"], y)
        return lambda: F.cross_entropy(model(x), y)
    if peer:  # torchvision detectors take lists and return a dict of losses
        targets = random_targets(batch, size, 90, 1)
        images = list(x)
        return lambda: sum(model(images, targets).values())
    targets = random_targets(batch, size, 80, 0)
    return lambda: model.compute_loss(model.forward_outputs(x), targets)["loss"]


def train_step(
    kind: str, model: nn.Module, peer: bool, size: int, batch: int, channels_last: bool = False
) -> Callable[[], None]:
    """One full optimizer step (forward, loss, backward, SGD update) of ``model`` in
    training mode on fixed random data, as a closure. ``channels_last`` feeds NHWC images
    (what ``SegmentationTask(channels_last=True)`` does; the weights stay NCHW)."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = _loss_fn(kind, model, peer, size, batch, channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def train_images_per_second(
    kind: str,
    model: nn.Module,
    peer: bool,
    size: int,
    batch: int,
    steps: int,
    channels_last: bool = False,
) -> float:
    """Images/s of ``train_step`` (median step time after one warm-up step)."""
    step = train_step(kind, model, peer, size, batch, channels_last)
    ms = median_ms(step, warmup=1, repeats=steps)
    model.eval()
    return 1000 * batch / ms


def loader_images_per_second(datamodule: Any, batches: int) -> tuple[float, int, int]:
    """Images/s of the training loader in the main process (one worker's throughput, with
    the augmentation), and the batch size and image side it produces."""
    datamodule.num_workers = 0
    datamodule.persistent_workers = False
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    it = iter(loader)
    first = next(it)  # opening files and building the iterator is not throughput
    images = first[0] if isinstance(first, list | tuple) else first["image"]
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it, None)
        if batch is None:
            it = iter(loader)
            batch = next(it)
        count += (batch[0] if isinstance(batch, list | tuple) else batch["image"]).shape[0]
    return count / (time.perf_counter() - start), images.shape[0], images.shape[-1]


def coco_eval_seconds(num_images: int, backend: str, per_image: int = 100) -> float:
    """Seconds of a full COCOeval (evaluate, accumulate, summarize) of ``per_image``
    random detections on each of ``num_images`` images with 7 random objects each."""
    from tasks.metrics.coco import evaluate_coco

    rng = np.random.default_rng(0)
    images = [{"id": i, "width": 640, "height": 480} for i in range(1, num_images + 1)]
    categories = [{"id": c, "name": str(c)} for c in range(1, 81)]
    annotations, results = [], []
    for image in images:
        for _ in range(7):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            w, h = rng.uniform(10, 140), rng.uniform(10, 100)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image["id"], "bbox": [x, y, w, h],
                 "area": w * h, "iscrowd": 0, "category_id": int(rng.integers(1, 81))}
            )  # fmt: skip
        for _ in range(per_image):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            results.append(
                {"image_id": image["id"], "category_id": int(rng.integers(1, 81)),
                 "bbox": [x, y, rng.uniform(10, 140), rng.uniform(10, 100)],
                 "score": float(rng.uniform())}
            )  # fmt: skip
    gt = {"images": images, "annotations": annotations, "categories": categories}
    start = time.perf_counter()
    evaluate_coco(gt, results, backend=backend)  # type: ignore[arg-type]
    return time.perf_counter() - start
