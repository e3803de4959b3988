"""Weights of any kind (``heads.weights_loader``) into a built model.

A model of the weights' own family loads them whole (another class count: fine-tuning,
the class predictors keep their initialization). A model of another family (a detector from
a DeepLab file, the joint model from a detector checkpoint) takes the parts both share: the
backbone (and, between SSDLite and the joint model, the whole detector), with one log line
saying what was skipped. Layers the weights do not reach (``layer_19`` of a DeepLab
backbone) keep their initialization, logged too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from backbones.weights import WeightsDownloadError, WeightsError
from heads.pretrained import load_for_finetuning
from heads.weights_loader import JOINT, SSDLITE, class_predictors, open_weights

log = logging.getLogger("mobilezoo")


def _layer(key: str) -> str:
    """``backbone.features.18.0.weight`` -> ``backbone layer_19``; ``head.x.y`` -> ``head``."""
    parts = key.split(".")
    if parts[0] == "backbone" and len(parts) > 2 and parts[2].isdigit():
        return f"backbone layer_{int(parts[2]) + 1}"
    if parts[0] == "features" and len(parts) > 1 and parts[1].isdigit():
        return f"layer_{int(parts[1]) + 1}"
    return parts[0]


def _summary(keys: Sequence[str]) -> str:
    groups: dict[str, int] = {}
    for key in keys:
        groups[_layer(key)] = groups.get(_layer(key), 0) + 1
    return ", ".join(f"{g} ({n})" for g, n in groups.items())


def _fit_shared(
    own: dict[str, Tensor],
    state: dict[str, Tensor],
    prefixes: tuple[str, ...],
    predictors: tuple[str, ...],
    source: str,
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """The tensors of ``state`` under ``prefixes`` that ``own`` takes.

    Returns ``(selected, skipped, fresh)``: what loads; the source keys left out (no place
    here, or class predictors of another class count); the keys of ``own`` under
    ``prefixes`` that keep their initialization because the source stops before their
    backbone layer (a DeepLab backbone has no ``layer_19``).

    Raises:
        WeightsError: a shape differs outside the class predictors, or the source lacks
            tensors of a layer it has (another architecture).
    """
    shared = [k for k in state if k.startswith(prefixes)]
    wrong = [
        k for k in shared
        if k in own and own[k].shape != state[k].shape and not k.startswith(predictors)
    ]  # fmt: skip
    if wrong:
        k = wrong[0]
        raise WeightsError(
            f"{source} does not fit this model: {k} has shape {tuple(state[k].shape)}, the "
            f"model {tuple(own[k].shape)} ({len(wrong)} such tensors; another width_mult or "
            "divisible_by?)"
        )
    selected = {k: state[k] for k in shared if k in own and own[k].shape == state[k].shape}
    skipped = [k for k in state if k not in selected]
    layers = {_layer(k) for k in state}
    absent = [k for k in own if k.startswith(prefixes) and k not in state]
    fresh = [k for k in absent if _layer(k) not in layers]
    missing = [k for k in absent if _layer(k) in layers]
    if missing:
        raise WeightsError(
            f"{source} does not fit this model: it lacks {len(missing)} tensors of layers it "
            f"has, e.g. {missing[:3]}"
        )
    return selected, skipped, fresh


def load_weights(
    model: nn.Module, builder: str, weights: str | Path, progress: bool = True
) -> list[str]:
    """Load weights of any kind into ``model``, built by ``builder``.

    Weights of ``builder`` itself load whole; with another class count the class
    predictors keep their initialization (fine-tuning, see
    ``heads.pretrained.load_for_finetuning``). Weights of another family load the parts
    both models share (the backbone; between SSDLite and the joint model, the detector),
    and one log line says what was skipped.

    Returns:
        The source's state-dict keys that were not loaded.
    """
    found = open_weights(weights, builder)
    state = found.state_dict(progress)
    if found.builder == builder:
        return load_for_finetuning(model, state, class_predictors(builder), found.describe())
    if {found.builder, builder} == {SSDLITE, JOINT}:
        prefixes: tuple[str, ...] = ("backbone.", "extras.", "head.")
    else:
        prefixes = ("backbone.",)
    selected, skipped, fresh = _fit_shared(
        model.state_dict(), state, prefixes, class_predictors(builder), found.describe()
    )
    model.load_state_dict(selected, strict=False)
    parts = " and ".join(p.rstrip(".") for p in prefixes)
    log.warning(
        "%s from %s: loaded the shared %s (%d tensors); skipped %s%s",
        builder,
        found.describe(),
        parts,
        len(selected),
        _summary(skipped) or "nothing",
        f"; kept the initialization of {_summary(fresh)} (not in the file)" if fresh else "",
    )
    return skipped


def load_backbone_weights(
    backbone: nn.Module, weights: str | Path, builder: str | None = None, progress: bool = True
) -> None:
    """Load the backbone of weights of any kind into a ``MobileNetV2`` (``features.*``).

    Layers the weights do not reach (``layer_19`` of a DeepLab file) keep their
    initialization, with a log line.

    Raises:
        WeightsError: the backbone is of another shape (named), or the file of no known kind.
    """
    found = open_weights(weights, builder)
    try:
        state = found.state_dict(progress)
    except WeightsDownloadError as err:
        raise err.for_option("weights_backbone") from err.__cause__
    own = {"backbone." + k: v for k, v in backbone.state_dict().items()}
    selected, _, fresh = _fit_shared(own, state, ("backbone.",), (), found.describe())
    if not selected:
        raise WeightsError(f"{found.describe()} has no backbone tensors")
    backbone.load_state_dict({k[len("backbone.") :]: v for k, v in selected.items()}, strict=False)
    if fresh:
        log.warning(
            "weights_backbone=%s: kept the initialization of %s (not in the file)",
            found.describe(),
            _summary(fresh),
        )
