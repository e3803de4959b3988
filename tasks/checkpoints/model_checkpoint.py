"""``tasks.ModelCheckpoint``: Lightning's checkpoint callback with three guarantees.

1. ``last.ckpt`` is always the most recent state. Lightning 2.6 rewrites it only when a
   top-k checkpoint is saved at the same step, so with ``monitor`` set and a metric that got
   worse it kept an old step; here it is rewritten at every checkpoint event (validation end,
   epoch end, ``every_n_train_steps``, end of training, exception).
2. Every write is atomic on the checkpoint's own filesystem: the file is written next to
   its destination under a temporary name, flushed to disk, then renamed over it. A kill or
   a full disk during the write leaves the previous checkpoint intact (Lightning writes into
   ``$TMPDIR`` and moves the file, which is a copy, and so not atomic, when the checkpoint
   folder is on another filesystem).
3. A state holding NaN or infinity (parameters or buffers such as BatchNorm running
   statistics) is never written; the previous checkpoint stays.

4. Restored state is untrusted: the paths a checkpoint's callback state names (best, k-th
   best, last and top-k files, which the callback later deletes) must resolve, links and
   ``..`` followed, inside the callback's folder; otherwise the state is dropped with a
   warning (``checked_callback_state``; ``BaseTask.on_load_checkpoint`` applies it to
   Lightning's own ``ModelCheckpoint`` too).

It also saves on exceptions (SIGTERM included) by default. It relies on private methods of
``lightning.pytorch.callbacks.ModelCheckpoint`` (``_save_checkpoint``,
``_save_last_checkpoint``), so ``lightning`` is bounded in ``pyproject.toml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from weakref import proxy

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn

from tasks.checkpoints.io import non_finite_tensors, quote
from tasks.peer_failure import is_peer_failure

#: entries of a ModelCheckpoint state that name files the callback may later delete
_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def _outside(path: Any, folder: str) -> bool:
    """Whether ``path`` is not a file name inside ``folder`` once links and ``..`` are
    resolved (remote paths: after normalizing ``..``)."""
    if not isinstance(path, str):
        return True
    if path == "":
        return False  # "nothing saved yet"
    if "://" in folder or "://" in path:
        inside = os.path.normpath(path).startswith(os.path.normpath(folder).rstrip("/") + "/")
        return not inside
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or os.path.commonpath([real, root]) != root


def checked_callback_state(callback: _LightningModelCheckpoint, state: Any,
                           source: str = "the checkpoint") -> dict[str, Any]:  # fmt: skip
    """``state`` (a ``ModelCheckpoint.state_dict()`` read from a checkpoint) if every file it
    names lies inside ``callback.dirpath``; otherwise the callback's own fresh state, with a
    warning naming the offending path. A restored path is later deleted by the callback
    (Lightning's "inside dirpath" test keeps ``..``), so a checkpoint naming
    ``<dirpath>/../../precious.txt`` would delete that file."""
    fresh = callback.state_dict()
    folder = callback.dirpath
    if not isinstance(state, dict):
        rank_zero_warn(f"{source}: ModelCheckpoint state is not a mapping; not restored")
        return fresh
    best_k = state.get("best_k_models", {})
    named = [state.get(k, "") for k in _PATH_KEYS]
    named += list(best_k) if isinstance(best_k, dict) else [best_k]
    if folder is None:
        bad = [p for p in named if p != ""]
    else:
        bad = [p for p in named if _outside(p, str(folder))]
    missing = [k for k in ("best_model_path", "best_model_score") if k not in state]
    if bad or missing:
        why = (f"names {quote(bad[0])}, outside its folder {folder}" if bad
               else f"lacks {', '.join(missing)}")  # fmt: skip
        rank_zero_warn(f"{source}: ModelCheckpoint state {why}; the callback's state is not "
                       "restored (no file it names will be replaced or deleted)")  # fmt: skip
        return fresh
    return state


class ModelCheckpoint(_LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``last.ckpt`` is always the latest state,
    written atomically, and never with non-finite values.

    Takes every argument of ``lightning.pytorch.callbacks.ModelCheckpoint``; ``save_last``
    and ``save_on_exception`` default to ``True``. ``save_last="link"`` is not supported (a
    link to a top-k file would not be the latest state).
    """

    def __init__(self, *args: Any, save_last: bool = True, save_on_exception: bool = True,
                 **kwargs: Any) -> None:  # fmt: skip
        if save_last == "link":
            raise ValueError("save_last='link' is not supported: last.ckpt is always a full file")
        super().__init__(*args, save_last=save_last, save_on_exception=save_on_exception, **kwargs)
        self._last_step_written: int | None = None

    # -- last.ckpt is the latest state ----------------------------------------------------

    def _save_last_checkpoint(self, trainer: Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_step_written = trainer.global_step

    def _refresh_last(self, trainer: Trainer) -> None:
        if (
            not self.save_last
            or trainer.fast_dev_run
            or trainer.sanity_checking
            or trainer.state.fn != TrainerFn.FITTING
            or self._last_step_written == trainer.global_step
            or trainer.global_step == 0
        ):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any,
                           **kwargs: Any) -> None:  # fmt: skip
        saved_before = self._last_global_step_saved
        super().on_train_batch_end(trainer, pl_module, *args, **kwargs)
        # A step-triggered save (every_n_train_steps / train_time_interval) happened or was
        # deferred to validation for the monitored metric; last.ckpt follows it now either way.
        every_n = self._every_n_train_steps
        if self._last_global_step_saved != saved_before or (
            every_n >= 1 and trainer.global_step % every_n == 0
        ):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        if is_peer_failure(exception):
            # Another process died or hung: saving is a collective that would wait for it
            # (NCCL: up to the process-group timeout). The last checkpoint written stays.
            latest = self.last_model_path or "none written yet"
            rank_zero_warn(
                f"no checkpoint on exit (a process of the run was lost); latest: {latest}"
            )
            return
        super().on_exception(trainer, pl_module, exception)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A run saved with a relative dirpath and evaluated with the absolute one (or the
        # reverse) is the same folder: no "dirpath has changed" warning, nothing dropped.
        state_dict = checked_callback_state(self, state_dict)
        saved = state_dict.get("dirpath")
        if (
            isinstance(saved, str)
            and self.dirpath
            and (os.path.abspath(saved) == os.path.abspath(self.dirpath))
        ):
            state_dict = {**state_dict, "dirpath": self.dirpath}
        super().load_state_dict(state_dict)

    def _should_remove_checkpoint(self, trainer: Trainer, previous: str, current: str) -> bool:
        # Lightning compares absolute paths that keep ".." and links; a file is only ever
        # deleted when it really lies inside this callback's folder.
        if self.dirpath is not None and _outside(previous, str(self.dirpath)):
            return False
        return super()._should_remove_checkpoint(trainer, previous, current)

    # -- atomic, finite writes ------------------------------------------------------------

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        state = [
            trainer.lightning_module.state_dict(),
            [o.state_dict() for o in trainer.optimizers],
        ]
        bad = non_finite_tensors(state)
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):  # on any rank
            rank_zero_warn(
                f"checkpoint {filepath} NOT written at step {trainer.global_step}: tensors "
                f"hold NaN or infinity ({', '.join(bad[:2]) or 'on another rank'}); the "
                "previous checkpoint is kept"
            )
            return
        path = Path(filepath)
        local = "://" not in str(filepath)  # remote stores commit whole objects themselves
        temporary = path.with_name(f".{path.name}.partial") if local else path
        try:
            trainer.save_checkpoint(temporary, self.save_weights_only)
            if local and trainer.is_global_zero:
                _fsync(temporary)
                os.replace(temporary, path)
                _fsync(path.parent)
        except OSError as err:
            raise OSError(
                err.errno,
                f"could not write checkpoint {path} ({err.strerror or err}); the previous "
                "checkpoint at that path is intact",
            ) from err
        finally:
            if local and trainer.is_global_zero:
                temporary.unlink(missing_ok=True)
        # What the parent's _save_checkpoint records after writing.
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
