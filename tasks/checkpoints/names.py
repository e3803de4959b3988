"""``--ckpt_path last`` and ``--ckpt_path best``: which file they mean, found from the config.

Lightning resolves these names from the checkpoint callback of the *running* trainer, whose
folder in a new process is a new, empty ``version_N``: ``validate --ckpt_path last`` found
nothing and evaluated random weights, and ``test --ckpt_path best`` failed with a traceback.
Here they name files of the config's latest training run, which the caller then checks like
any other path (readable, finite, of the config's task):

- ``last``: the newest ``last.ckpt`` in the folder of the config's ``ModelCheckpoint``
  (its ``dirpath``), else under ``trainer.default_root_dir`` (``checkpoints/`` and
  ``<logger name>/version_N/checkpoints/``);
- ``best``: the best file that the callback state of that ``last.ckpt`` records, looked up
  by name in the same folder (a recorded path never leads elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tasks.checkpoints.io import CheckpointError, quote, read_checkpoint

#: the values of ``--ckpt_path`` resolved here
NAMES = ("last", "best")


def _get(node: Any, key: str) -> Any:
    return node.get(key) if hasattr(node, "get") else None


def _folders(trainer: Any) -> tuple[list[Path], list[Path]]:
    """(the ``dirpath`` of every configured checkpoint callback, the run roots to search)."""
    dirpaths = []
    for callback in _get(trainer, "callbacks") or []:
        if str(_get(callback, "class_path")).endswith("ModelCheckpoint"):
            dirpath = _get(_get(callback, "init_args"), "dirpath")
            if dirpath:
                dirpaths.append(Path(str(dirpath)).expanduser())
    roots = [Path(str(_get(trainer, "default_root_dir") or os.getcwd())).expanduser()]
    logger = _get(trainer, "logger")
    save_dir = _get(_get(logger, "init_args"), "save_dir")
    if save_dir:
        roots.append(Path(str(save_dir)).expanduser())
    return dirpaths, roots


def _last_files(trainer: Any) -> tuple[list[Path], str]:
    dirpaths, roots = _folders(trainer)
    if dirpaths:
        return [d / "last.ckpt" for d in dirpaths if (d / "last.ckpt").is_file()], ", ".join(
            str(d) for d in dirpaths
        )
    found = []
    for root in roots:
        found += [
            root / "checkpoints" / "last.ckpt",
            *root.glob("*/version_*/checkpoints/last.ckpt"),
        ]
    where = " and ".join(f"{r}/{{checkpoints,*/version_*/checkpoints}}" for r in roots)
    return [f for f in found if f.is_file()], where


def resolve_checkpoint_name(name: str, trainer: Any) -> Path:
    """The file ``--ckpt_path last`` / ``best`` means for a config's ``trainer`` section.

    Raises:
        CheckpointError: one line saying where it looked, when there is no such file.
    """
    files, where = _last_files(trainer)
    if not files:
        raise CheckpointError(
            f"--ckpt_path {name}: no last.ckpt in {where}; train with this config first "
            "(`mobilezoo fit -c ...`) or give the checkpoint's path"
        )
    last = max(files, key=lambda f: f.stat().st_mtime)
    if name == "last":
        return last
    states = read_checkpoint(last).get("callbacks")
    recorded = [
        s.get("best_model_path")
        for s in (states.values() if isinstance(states, dict) else [])
        if isinstance(s, dict) and isinstance(s.get("best_model_path"), str)
    ]
    for path in recorded:
        if path and (last.parent / os.path.basename(path)).is_file():
            return last.parent / os.path.basename(path)
    shown = quote(recorded[0]) if recorded and recorded[0] else "none"
    raise CheckpointError(
        f"--ckpt_path best: {last} records no best checkpoint that exists in "
        f"{last.parent} (recorded: {shown}); give the checkpoint's path or use last"
    )
