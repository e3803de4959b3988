"""``SetMean``: a loss averaged over the whole evaluation set, equal under DDP; and
``metric_names``: one distinct log key per class."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


class SetMean(Metric):
    """``sum of values / sum of counts`` over every batch of every process.

    Lightning's own ``self.log(..., sync_dist=True)`` averages per-batch means weighted by
    batch size on each process, then takes the plain mean of the processes' means: with an
    uneven number of images per process (7 images on 2 processes) that is not the set's mean.
    Summing the two states once at the end is.

    ``update(total, count)``: ``total`` the summed loss of the batch (a scalar tensor),
    ``count`` what it is a sum over (images, matched anchors, labelled pixels).
    ``compute()``: ``total / max(count, 1)`` (float64 state, float32 result).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, total: Tensor, count: Tensor | float) -> None:
        # Out of place: under CPU ddp_spawn a state may sit in memory shared between processes.
        self.total = self.total + total.detach().double().to(self.total.device)
        self.count = self.count + torch.as_tensor(
            count, dtype=torch.float64, device=self.count.device
        )

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp(min=1)).float()


def metric_names(names: Sequence[str]) -> list[str]:
    """Log keys for per-class metrics (``val/iou_<key>``): one distinct key per class.

    Whitespace and ``/`` become ``_``. Classes whose keys would coincide (two categories
    named alike, or ``"traffic light"`` next to ``"traffic_light"``) get their class index
    appended, ``person_3``, with a warning: Lightning averages two values logged under one
    key, which would report the mean of two classes' IoUs as one class's.
    """
    keys = [re.sub(r"[\s/]+", "_", str(name)) for name in names]
    counts = Counter(keys)
    if all(n == 1 for n in counts.values()):
        return keys
    shared = sorted(k for k, n in counts.items() if n > 1)
    warnings.warn(
        f"classes share the metric names {shared}: their keys get the class index appended",
        stacklevel=2,
    )
    out = [f"{k}_{i}" if counts[k] > 1 else k for i, k in enumerate(keys)]
    if len(set(out)) < len(out):  # a suffixed key met another class's own name
        out = [f"{k}_{i}" for i, k in enumerate(keys)]  # the index is the last part: distinct
    return out
