"""Where ``validate``, ``test`` and ``predict`` of a checkpoint write: next to its run.

``fit`` writes ``<default_root_dir>/lightning_logs/version_N/`` with the checkpoints in
``checkpoints/``. Evaluating ``.../version_N/checkpoints/last.ckpt`` then writes its
TensorBoard logs, metric plots and predictions to ``.../version_N/<subcommand>/last/``,
instead of opening a new ``version_M`` that nobody can match to the checkpoint. A
checkpoint outside a ``checkpoints`` folder gets ``<its folder>/<subcommand>/<its stem>/``.
"""

from __future__ import annotations

from pathlib import Path


def checkpoint_run_dir(ckpt_path: str | Path) -> Path:
    """The run folder a checkpoint belongs to (the parent of its ``checkpoints`` folder)."""
    ckpt = Path(ckpt_path).expanduser()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def evaluation_dir(ckpt_path: str | Path, subcommand: str) -> Path:
    """``<run>/<subcommand>/<checkpoint stem>``: where an evaluation of ``ckpt_path`` writes."""
    return checkpoint_run_dir(ckpt_path) / subcommand / Path(ckpt_path).stem
