"""Training data order and augmentation that a resumed run replays exactly.

An interrupted run resumed from a mid-epoch checkpoint must see the same batches, with the
same random augmentation, as a run that was never interrupted. Two pieces make that so:

- ``ResumableSampler`` shuffles with a generator seeded by ``(seed, epoch)`` (like
  ``DistributedSampler``, which it extends, so Lightning keeps it under DDP) and can skip
  the batches of an epoch that the checkpoint already holds.
- ``SeededDataset`` re-seeds the sample's augmentation from ``(seed, epoch, index)`` before
  reading it, so augmentation does not depend on worker processes or on RNG history.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed that is a pure function of ``(seed, epoch, index)``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ResumableSampler(DistributedSampler):
    """Shuffled, sharded indices that can start part-way into an epoch.

    Yields ``(index, epoch)`` pairs for ``SeededDataset``. ``len()`` stays the full epoch
    length, which is what Lightning's progress counters expect on a mid-epoch restart.

    Args:
        dataset: the (sized) training set.
        batch_size: batch size per process, to turn skipped batches into samples.
        seed: base seed of the shuffle.
        shuffle: shuffle each epoch.
        drop_last: the loader drops the last incomplete batch (sets how many batches make
            a whole epoch).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if distributed else 1
        rank = dist.get_rank() if distributed else 0
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.drop_last_batch = drop_last
        self._resume_epoch: int | None = None
        self._resume_batches = 0

    def resume(self, epoch: int, batches_done: int) -> None:
        """Skip the first ``batches_done`` batches of ``epoch`` (once)."""
        self._resume_epoch, self._resume_batches = epoch, batches_done

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        if self._resume_epoch == self.epoch:
            size = self.batch_size
            batches = len(indices) // size if self.drop_last_batch else -(-len(indices) // size)
            # A checkpoint written after an epoch's last batch (at the validation that ends
            # it) holds the next epoch's number with the finished epoch's batch count:
            # Lightning runs that next epoch whole, so nothing of it is skipped.
            if self._resume_batches < batches:
                indices = indices[self._resume_batches * size :]
            self._resume_epoch = None
        epoch = self.epoch
        return iter([(i, epoch) for i in indices])


class SeededDataset(Dataset):
    """Wraps a map-style data set whose random transform lives in ``.transform``.

    ``dataset[(index, epoch)]`` seeds ``dataset.transform`` (albumentations'
    ``set_random_seed``) and the global ``random`` / ``numpy`` generators from
    ``sample_seed(seed, epoch, index)``, then returns ``dataset[index]``.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, epoch = key
        s = sample_seed(self.seed, epoch, index)
        random.seed(s)
        np.random.seed(s)
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_seed"):
            transform.set_random_seed(s)
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        # Attributes of the wrapped set (classes, coco, ...) stay reachable.
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)
