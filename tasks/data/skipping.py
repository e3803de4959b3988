"""The ``on_bad_sample: skip`` policy: replace an unreadable training sample, count it.

A bad file found while training (missing, truncated, not an image, a mask of the wrong
size...) raises ``BadSampleError``. With the skip policy the sample is replaced by the next
readable one, so batch sizes, and the number of batches on every DDP rank, stay as they
were; the file is logged and counted. Evaluation never skips: a metric computed over fewer
images than the set holds would be a silently wrong number.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from tasks.data.io import BadSampleError

log = logging.getLogger(__name__)

#: slots of the shared counter: one for the main process and one per loader worker
_MAX_WORKERS = 256


class SkipBadSamples(Dataset):
    """Wraps a data set keyed by ``index`` or ``(index, epoch)``; on ``BadSampleError``,
    logs it, counts it and returns the next readable sample instead.

    Args:
        dataset: the wrapped data set.
        max_tries: give up (re-raise) after this many bad samples in a row.
    """

    def __init__(self, dataset: Dataset, max_tries: int = 16) -> None:
        self.dataset = dataset
        self.max_tries = max_tries
        # One slot per process, in shared memory, so workers count without races.
        self.counts = torch.zeros(_MAX_WORKERS + 1, dtype=torch.int64).share_memory_()

    @property
    def skipped(self) -> int:
        """Samples skipped so far, over all loader workers."""
        return int(self.counts.sum())

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        index, rest = (key[0], tuple(key[1:])) if isinstance(key, tuple) else (key, ())
        for attempt in range(self.max_tries):
            candidate = (index + attempt) % len(self)
            try:
                return self.dataset[(candidate, *rest) if rest else candidate]
            except BadSampleError as err:
                worker = get_worker_info()
                self.counts[0 if worker is None else worker.id + 1] += 1
                log.warning("skipping bad sample %d: %s", candidate, err)
        raise BadSampleError(
            f"{self.max_tries} bad samples in a row from index {index}; is the data set readable?"
        )

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "counts"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
