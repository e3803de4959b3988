"""File names of exports: after the model and the run, so that exporting ``last.ckpt`` of
two runs (or of a detector and a classifier) gives two files instead of one ``last.onnx``
that silently replaces the other. Two checkpoints at the same relative path of two
projects, or one builder with other arguments, differ in a short hash / the arguments."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from heads import builder_of_kind
from tasks.checkpoints.run_dirs import checkpoint_run_dir


def default_stem(source: str | Path, kind: str, builder_args: dict[str, Any] | None = None) -> str:
    """The file stem of an export of ``source`` (a checkpoint path or a builder name).

    ``outputs/detection_demo/lightning_logs/version_0/checkpoints/last.ckpt`` gives
    ``ssdlite_mobilenet_v2-detection_demo-version_0-last-<6 hex digits>``, the digits a hash
    of the checkpoint's real path (two projects' ``outputs/...`` differ there); a checkpoint
    outside a Lightning run gives ``<builder>-<folder>-<stem>-<hash>``, the builder the
    registered one of the model's ``kind``. A builder name is
    kept, followed by its ``builder_args`` (``ssdlite_mobilenet_v2-num_classes3``; a hash
    when they do not fit in a short name).
    """
    if not str(source).endswith(".ckpt"):
        return str(source) + _args_suffix(builder_args or {})
    ckpt = Path(source).expanduser().absolute()
    run = checkpoint_run_dir(ckpt)
    parts = [builder_of_kind(kind).name]
    if run.parent.name == "lightning_logs":
        parts.append(run.parent.parent.name)
    parts += [run.name, ckpt.stem, _digest(os.path.realpath(ckpt))]
    return "-".join(p.replace("=", "") for p in parts if p)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _args_suffix(args: dict[str, Any]) -> str:
    if not args:
        return ""
    text = "-".join(f"{k}{v}" for k, v in sorted(args.items()))
    if len(text) <= 60 and re.fullmatch(r"[\w.\-]+", text):
        return "-" + text
    return "-" + _digest(repr(sorted(args.items())))
