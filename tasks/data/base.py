"""Loader settings shared by every data module, and evaluation without duplicates."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from tasks.data.resumable import ResumableSampler, SeededDataset
from tasks.data.skipping import SkipBadSamples


@dataclass(frozen=True)
class LoaderOptions:
    """How a data module's loaders batch and read its samples: the ``loader`` argument of
    every data module (``data.init_args.loader.batch_size`` in a config).

    Args:
        batch_size: images per training batch, per process.
        eval_batch_size: batch size of validation/test/predict loaders (default: ``batch_size``).
        num_workers: loader worker processes (0 loads in the main process).
        pin_memory: page-locked host memory for faster copies to a GPU.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        on_bad_sample: what a training sample that cannot be read does: ``"raise"`` stops with
            an error naming the file; ``"skip"`` logs it, counts it (``skipped_samples``,
            logged as ``train/skipped_samples``) and uses the next readable sample.
            Evaluation always raises, so metrics cover the whole set.

    Raises:
        ValueError: a value out of range, named with the value given.
    """

    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = True
    on_bad_sample: Literal["raise", "skip"] = "raise"

    def __post_init__(self) -> None:
        if self.on_bad_sample not in ("raise", "skip"):
            raise ValueError(f"on_bad_sample must be 'raise' or 'skip', got {self.on_bad_sample!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


class BaseDataModule(LightningDataModule):
    """What the zoo's data modules share: loaders that resume exactly and evaluate each
    sample once.

    Args:
        loader: batch sizes, workers and the bad-sample policy (``LoaderOptions``). Its
            values are also attributes of the data module (``batch_size``,
            ``eval_batch_size`` resolved to ``batch_size`` when unset, ``num_workers``,
            ``pin_memory``, ``persistent_workers`` false without workers, ``on_bad_sample``).
    """

    def __init__(self, loader: LoaderOptions = LoaderOptions()) -> None:
        super().__init__()
        self.batch_size = loader.batch_size
        self.eval_batch_size = loader.eval_batch_size or loader.batch_size
        self.num_workers = loader.num_workers
        self.pin_memory = loader.pin_memory
        self.persistent_workers = loader.persistent_workers and loader.num_workers > 0
        self.on_bad_sample = loader.on_bad_sample
        self._resume: dict[str, int] | None = None
        self._skipping: SkipBadSamples | None = None

    @property
    def skipped_samples(self) -> int:
        """Training samples skipped as unreadable so far (``on_bad_sample="skip"``)."""
        return self._skipping.skipped if self._skipping is not None else 0

    # -- exact resume (see tasks.data.resumable) ---------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the epoch; saved in every checkpoint."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        loop = trainer.fit_loop
        return {
            "epoch": int(loop.epoch_progress.current.processed),
            "batches_done": int(loop.epoch_loop.batch_progress.current.processed),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self._resume = {k: int(v) for k, v in state_dict.items()}
            # The training loader below resumes mid-epoch exactly, so Lightning's
            # "dataloader is not resumable" warning does not apply.
            warnings.filterwarnings(
                "ignore", message="You're resuming from a checkpoint that ended"
            )

    def _loader(
        self,
        dataset: Dataset,
        train: bool,
        collate_fn: Callable[[list[Any]], Any] | None = None,
    ) -> DataLoader:
        """A DataLoader. Training loaders shuffle reproducibly and resume mid-epoch exactly;
        evaluation loaders never repeat a sample across processes.

        Lightning's default DistributedSampler pads the data set so every process gets the
        same number of batches, which would count the padded samples twice in a metric.
        Evaluation loaders therefore shard with ``UnrepeatedDistributedSampler``.
        """
        sampler: Any = None
        seed = torch.initial_seed() % 2**31
        drop_last = train and len(dataset) > self.batch_size  # type: ignore[arg-type]
        if train:
            # Order and augmentation are functions of (seed, epoch, index): a run resumed
            # mid-epoch replays exactly what an uninterrupted run would have seen.
            sampler = ResumableSampler(dataset, self.batch_size, seed=seed, drop_last=drop_last)
            if self._resume is not None:
                sampler.resume(self._resume["epoch"], self._resume["batches_done"])
                self._resume = None
            dataset = SeededDataset(dataset, seed)
            if self.on_bad_sample == "skip":
                dataset = self._skipping = SkipBadSamples(dataset)
        elif dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_fn,
            # Worker seeds come from the loader's own generator, not the global RNG, so
            # starting an iterator (e.g. on resume) does not shift the model's dropout.
            generator=torch.Generator().manual_seed(seed),
        )
