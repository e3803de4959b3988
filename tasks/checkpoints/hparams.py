"""Which hyper-parameters a checkpoint decides, which the user decides, and their limits.

The rule (``mobilezoo validate/test/predict/fit --ckpt_path``):

- architecture values (``Task.architecture_hparams``: class count, width, anchors, ...)
  come from the checkpoint, whose weights they describe; a config that says otherwise is
  reported and overruled;
- evaluation options (``Task.evaluation_hparams``: scales, flip, output stride of dilated
  evaluation, thresholds) always follow the command line and ``-c`` (or their defaults);
- every other value the user passes on the command line or in ``-c`` overrides the
  checkpoint; values the user did not pass come from the checkpoint;
- ``weights`` / ``weights_backbone`` are set to ``None``: the checkpoint holds the weights,
  so nothing is downloaded.

Values from a checkpoint or a config are untrusted: ``check_hparams`` bounds them before
any model is built.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser

from tasks.checkpoints.io import CheckpointError, hyper_parameters, quote, shorten

log = logging.getLogger("mobilezoo")

#: (low, high) inclusive bounds of numeric hyper-parameters, by name, whichever task has them
LIMITS: dict[str, tuple[float, float]] = {
    "num_classes": (1, 30_000),  # a 1280 x 30k head is 150 MB
    "width_mult": (0.1, 4.0),
    "image_size": (16, 4096),
    "frozen_stages": (0, 9),
    "freeze_backbone_steps": (0, 100_000_000),
    "dropout": (0.0, 1.0),
    "label_smoothing": (0.0, 1.0),
    "neg_pos_ratio": (0.0, 1000.0),
    "min_negatives": (0, 100_000),
    "score_threshold": (0.0, 1.0),
    "nms_iou": (0.0, 1.0),
    "max_detections": (1, 100_000),
    "bn_momentum": (0.0, 1.0),
    "ignore_index": (-1, 65_535),
    "class_prior": (1e-9, 1.0 - 1e-9),  # a probability; 0 and 1 make infinite biases
}
#: bounds of each element of sequence hyper-parameters, and their largest length
SEQUENCE_LIMITS: dict[str, tuple[float, float, int]] = {
    "eval_scales": (0.05, 4.0, 16),
}


def check_hparams(hparams: dict[str, Any], source: str) -> None:
    """Raise ``CheckpointError`` naming ``source`` and the value when a hyper-parameter (or a
    field of an option group) is out of its bounds (``LIMITS``, ``SEQUENCE_LIMITS``), non-finite, or ``class_names`` is longer
    than ``num_classes``."""
    # option groups (``loss``, ``postprocess``, ``loader``, ...) are stored as dicts: their
    # fields are bounded by the same names
    groups = [(f"{key}.", value) for key, value in hparams.items() if isinstance(value, dict)]
    for prefix, values in [("", hparams), *groups]:
        for name, (low, high) in LIMITS.items():
            value = values.get(name)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # absent, or a type error that the config parser reports
            if not (math.isfinite(value) and low <= value <= high):
                raise CheckpointError(
                    f"{source}: {prefix}{name}={quote(value)} is outside [{low}, {high}]"
                )
    for name, (low, high, length) in SEQUENCE_LIMITS.items():
        values = hparams.get(name)
        if not isinstance(values, Sequence) or isinstance(values, str):
            continue
        if not 1 <= len(values) <= length:
            raise CheckpointError(f"{source}: {name} has {len(values)} values; 1 to {length}")
        for v in values:
            if not isinstance(v, (int, float)) or not (math.isfinite(v) and low <= v <= high):
                raise CheckpointError(f"{source}: {name} value {quote(v)} outside [{low}, {high}]")
    names, num_classes = hparams.get("class_names"), hparams.get("num_classes")
    if isinstance(names, Sequence) and isinstance(num_classes, int) and len(names) > num_classes:
        raise CheckpointError(
            f"{source}: class_names has {len(names)} names for num_classes={num_classes}"
        )


def saved_hparams(ckpt: dict[str, Any], source: str) -> tuple[str | None, dict[str, Any]]:
    """The task class path and hyper-parameters of a checkpoint from ``read_checkpoint``.

    The block's size is checked first; Lightning's own bookkeeping (``_instantiator``) is
    dropped. The weights are not touched: ``tasks.checkpoints.cost.check_checkpoint_state``
    compares them with the model these values describe, then checks them for NaN.
    """
    hparams = hyper_parameters(ckpt, source)
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    if class_path is not None and not isinstance(class_path, str):
        raise CheckpointError(f"checkpoint {source}: _class_path {quote(class_path)} is no name")
    return class_path, hparams


def init_parameters(task_cls: type) -> set[str]:
    """The argument names ``task_cls(...)`` takes: those of its ``__init__`` and, where that
    passes ``**kwargs`` on to ``super().__init__``, those of the next ``__init__`` up the
    class hierarchy (a task's and ``BaseTask``'s)."""
    names: set[str] = set()
    for klass in task_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        names.update(p.name for p in params if p.kind not in variadic)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return names - {"self"}


def task_hparams(task_cls: type, hparams: dict[str, Any], source: str) -> dict[str, Any]:
    """The hyper-parameters that ``task_cls`` takes (``init_parameters``), type-checked
    (``check_types``); the others are logged and dropped."""
    accepted = init_parameters(task_cls)
    unknown = sorted(set(hparams) - accepted)
    if unknown:
        log.warning("checkpoint %s: ignoring unknown hyper-parameters %s", source,
                    ", ".join(quote(k) for k in unknown[:5]))  # fmt: skip
    kept = {k: v for k, v in hparams.items() if k in accepted}
    check_types(task_cls, kept, f"checkpoint {source}")
    return kept


def check_types(task_cls: type, hparams: dict[str, Any], source: str) -> None:
    """Raise ``CheckpointError`` naming the key when a value does not have the type that
    ``task_cls.__init__`` declares (checked by jsonargparse, as the config would be)."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(task_cls, skip={"optimizer", "lr_scheduler"})
    try:
        parser.parse_object(hparams)
    except ArgumentError as err:
        raise CheckpointError(f"{source}: {shorten(str(err), limit=160)}") from None


def merge_hparams(
    checkpoint: dict[str, Any],
    config: dict[str, Any],
    explicit: set[str],
    architecture: Sequence[str],
    evaluation: Sequence[str],
    weights: Sequence[str] = ("weights", "weights_backbone"),
) -> tuple[dict[str, Any], list[str]]:
    """The task's ``init_args`` for a run from a checkpoint (the rule in the module doc).

    Args:
        checkpoint: the checkpoint's hyper-parameters (``_class_path`` etc. removed).
        config: the parsed config's ``init_args`` (defaults, ``-c`` files, command line).
        explicit: names the user gave in ``-c`` or on the command line.
        architecture: names whose value the checkpoint decides.
        evaluation: names whose value the config always decides.
        weights: names of weights to load, set to ``None`` (the checkpoint holds them).

    Returns:
        The merged ``init_args`` and one note per value where the config was overruled.
    """
    merged, notes = dict(config), []
    for name, value in checkpoint.items():
        if name not in config or name in evaluation or name in weights:
            continue
        if name in architecture:
            if name in explicit and config[name] != value:
                notes.append(
                    f"{name}: the checkpoint's {quote(value)} is used, not the config's "
                    f"{quote(config[name])} (the weights have that architecture)"
                )
            merged[name] = value
        elif name not in explicit:
            merged[name] = value
    for name in weights:
        if merged.get(name) is not None:
            merged[name] = None  # the checkpoint's weights replace them: no download
    return merged, notes
