"""The model registry, torchvision-style: every builder registers itself where it is defined.

``@register_model(kind=..., default_size=...)`` on a builder records its name (the
function's), its kind, the square input side it is meant for, its trained weights entries
and the state-dict prefixes of its class-dependent layers. ``list_models()``,
``get_model(name, **kwargs)`` and ``get_model_spec(name)`` read them; so do ``hubconf.py``,
the weights loader and export, which keep no table of their own.

This module is the bottom of the model side (torch and the standard library only): the
backbone and every head module import it to register, so it imports none of them.
``import heads`` imports every builder, so ``heads.list_models()`` lists them all.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from torch import nn

#: what a model computes; also the kind recorded in exported files
Kind = Literal["backbone", "classifier", "detector", "segmenter", "joint"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class ModelSpec:
    """One registered builder.

    Attributes:
        name: the builder's name, e.g. ``"ssdlite_mobilenet_v2"``.
        builder: the function; its keyword arguments are the model's options.
        kind: one of ``KINDS``; the built model's class carries the same ``kind``.
        default_size: square input side the model is meant for (224, 320, 513).
        weights: its trained weights (``heads.pretrained.WeightsEntry`` rows), each with
            ``builder == name``.
        class_predictors: state-dict prefixes of the class-dependent layers (those
            re-initialized when fine-tuning to another class count).
        architecture: the builder options that trained weights decide (recorded in and
            read from weights files: everything that rebuilds the model).
    """

    name: str
    builder: Callable[..., nn.Module]
    kind: Kind
    default_size: int
    weights: tuple[Any, ...] = ()
    class_predictors: tuple[str, ...] = ()
    architecture: tuple[str, ...] = ()


_MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str | None = None,
    builder: Callable[..., nn.Module] | None = None,
    *,
    kind: Kind | None = None,
    default_size: int | None = None,
    weights: Sequence[Any] = (),
    class_predictors: Sequence[str] = (),
    architecture: Sequence[str] = (),
) -> Callable[..., Any]:
    """Register a builder: ``@register_model(kind="detector", default_size=320)`` above its
    ``def`` (the name is the function's), or ``register_model("name", fn, kind=...,
    default_size=...)``.

    Raises:
        ValueError: the name is taken, ``kind`` is not one of ``KINDS``, ``default_size``
            is not a positive integer, or a weights entry names another builder.
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is already registered")
        if kind not in KINDS:
            raise ValueError(f"kind of {key!r} must be one of {KINDS}, got {kind!r}")
        if not isinstance(default_size, int) or default_size < 1:
            raise ValueError(
                f"default_size of {key!r} must be a positive int, got {default_size!r}"
            )
        foreign = [w.name for w in weights if w.builder != key]
        if foreign:
            raise ValueError(f"weights {foreign} of {key!r} name another builder")
        _MODELS[key] = ModelSpec(
            key,
            fn,
            kind,
            default_size,
            tuple(weights),
            tuple(class_predictors),
            tuple(architecture),
        )
        return fn

    return add(builder) if builder is not None else add


def list_models(
    include: str | None = None, exclude: str | None = None, kind: Kind | None = None
) -> list[str]:
    """Sorted names of the registered models.

    Args:
        include: keep only names matching this shell pattern (``"*mobilenet_v2*"``).
        exclude: drop names matching this shell pattern.
        kind: keep only models of this kind.
    """
    names = sorted(n for n, s in _MODELS.items() if kind is None or s.kind == kind)
    if include is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, include)]
    if exclude is not None:
        names = [n for n in names if not fnmatch.fnmatchcase(n, exclude)]
    return names


def get_model_spec(name: str) -> ModelSpec:
    """What is registered as ``name``.

    Raises:
        ValueError: unknown name; the message names the closest registered one and all.
    """
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}choose from {list_models()}")
    return _MODELS[name]


def model_specs() -> list[ModelSpec]:
    """Every registered builder, in registration order."""
    return list(_MODELS.values())


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name`` (``ValueError`` as ``get_model_spec``)."""
    return get_model_spec(name).builder


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments.

    Example: ``get_model("ssdlite_mobilenet_v2", num_classes=3, width_mult=0.5)``.
    """
    return get_model_builder(name)(**kwargs)


def builder_of_kind(kind: str) -> ModelSpec:
    """The first registered builder of ``kind`` (the zoo has one builder per kind).

    Raises:
        ValueError: no builder of that kind.
    """
    for spec in _MODELS.values():
        if spec.kind == kind:
            return spec
    raise ValueError(f"no model of kind {kind!r} is registered; kinds: {KINDS}")


def model_kind(model: nn.Module) -> Kind:
    """The kind a zoo model declares (its class's ``kind``; an ``InferenceModel`` answers
    for the model it wraps).

    Raises:
        TypeError: ``model`` is not a zoo model.
    """
    kind = getattr(model, "kind", None)
    if not isinstance(kind, str) or kind not in KINDS:
        raise TypeError(
            f"cannot export a {type(model).__name__}: not a zoo model (its class declares no "
            f"kind of {KINDS})"
        )
    return kind  # type: ignore[return-value]
