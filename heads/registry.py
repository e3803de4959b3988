"""Named model builders, torchvision-style: ``list_models()`` and ``get_model(name, **kwargs)``.

Pure torch, like the rest of ``heads``; ``hubconf.py`` exposes the same builders to
``torch.hub.load``. A weights API can register further names (for instance a builder with
pretrained weights bound) with ``register_model``.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from backbones.mobilenetv2 import mobilenet_v2
from heads.classifier import mobilenet_v2_classifier
from heads.deeplabv3 import deeplabv3_mobilenet_v2
from heads.joint import ssdlite_deeplabv3_mobilenet_v2
from heads.ssdlite import ssdlite_mobilenet_v2

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(
    name: str, builder: Callable[..., nn.Module] | None = None
) -> Callable[..., Any]:
    """Register ``builder`` under ``name`` (usable as a decorator: ``@register_model("x")``).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def add(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = fn
        return fn

    return add(builder) if builder is not None else add


def list_models(include: str | None = None, exclude: str | None = None) -> list[str]:
    """Sorted names of the registered models.

    Args:
        include: keep only names matching this shell pattern (``"*mobilenet_v2*"``).
        exclude: drop names matching this shell pattern.
    """
    names = sorted(_BUILDERS)
    if include is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, include)]
    if exclude is not None:
        names = [n for n in names if not fnmatch.fnmatchcase(n, exclude)]
    return names


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``.

    Raises:
        ValueError: unknown name; the message names the closest registered one and all.
    """
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, list(_BUILDERS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"unknown model {name!r}; {hint}choose from {list_models()}")
    return _BUILDERS[name]


def get_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with the builder's keyword arguments.

    Example: ``get_model("ssdlite_mobilenet_v2", num_classes=3, width_mult=0.5)``.
    """
    return get_model_builder(name)(**kwargs)


register_model("mobilenet_v2", mobilenet_v2)
register_model("mobilenet_v2_classifier", mobilenet_v2_classifier)
register_model("ssdlite_mobilenet_v2", ssdlite_mobilenet_v2)
register_model("deeplabv3_mobilenet_v2", deeplabv3_mobilenet_v2)
register_model("ssdlite_deeplabv3_mobilenet_v2", ssdlite_deeplabv3_mobilenet_v2)
