"""One reader of every kind of weights the builders, the tasks and export are given.

``open_weights(x)`` recognizes what ``x`` is and returns a ``Weights``: the builder the
tensors were trained for, the architecture options they need, and (loaded on demand) a
state dict in that builder's keys. It knows these kinds:

- ``"entry"``: a name of ``heads.pretrained.list_weights()`` (``"imagenet"``,
  ``"imagenet_tf_8bit"``, ``"voc_tf"``, ...); nothing is fetched until the tensors are asked
  for;
- ``"converted"``: a file written by ``mobilezoo convert`` (``{"state_dict", "mobilezoo"}``);
- ``"checkpoint"``: a Lightning checkpoint of a zoo task (``model.*`` keys);
- ``"state_dict"``: ``torch.save(model.state_dict())`` of a zoo model;
- ``"torchvision"``: a state dict of torchvision's ``mobilenet_v2`` (``features.*``), read as
  the classifier's.

Files are untrusted: read with ``weights_only=True``, only listed architecture keys of plain
types and checked ranges are taken from their metadata, non-finite tensors are refused.
Anything else is one ``WeightsError`` (a ``ValueError``) naming the file and the kinds
known here.

``architecture_of`` applies what weights need to a builder's options;
``heads.weights_transfer`` loads them into a built model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backbones.mobilenetv2 import MIN_CHANNELS, infer_width
from backbones.registry import get_model_builder, get_model_spec
from backbones.weights import WeightsError, WeightsNotFoundError
from heads.postprocess import PostprocessOptions
from heads.pretrained import META_KEY, WeightsEntry, fetch_source, list_weights

CLASSIFIER = "mobilenet_v2_classifier"
#: the builder a converted backbone-only file names (torchvision's ``features.*`` keys)
BACKBONE = "mobilenet_v2"
SSDLITE = "ssdlite_mobilenet_v2"
#: SSD (not lite): its predictors are single convs (``head.cls_predictors.0.weight``)
SSD = "ssd_mobilenet_v2"
#: the Object Detection API's ``min_depth`` of its MobileNetV2 feature extractors
#: (``ssd_mobilenet_v2``'s narrowest layer)
OD_MIN_DEPTH = 16
DEEPLAB = "deeplabv3_mobilenet_v2"
JOINT = "ssdlite_deeplabv3_mobilenet_v2"
KINDS = (
    "a weights name (heads.pretrained.list_weights())",
    "a `mobilezoo convert` file",
    "a Lightning checkpoint of a zoo task",
    "a zoo model's state dict",
    "a torchvision mobilenet_v2 state dict",
)
#: the architecture options a backbone's weights decide
BACKBONE_ARCHITECTURE = ("width_mult", "divisible_by", "padding")
#: options the weights only suggest: used when the caller leaves them ``None``, else the
#: caller's value wins (another class count fine-tunes; any output stride runs the weights)
SUGGESTED = ("num_classes", "num_det_classes", "num_seg_classes", "output_stride", "image_size")
#: a detector's post-processing as its weights' source ran it (a converted TF Lite
#: detection export): fields of ``PostprocessOptions``, used where the caller leaves the
#: field's default, else the caller's value wins
POSTPROCESS_OPTIONS = ("score_threshold", "nms_iou", "max_detections", "class_agnostic_nms")
_MAX_META_CHARS = 64_000


def _is_int(v: Any, low: int, high: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: valid values of every architecture key a file may carry
_VALID: dict[str, Callable[[Any], bool]] = {
    "num_classes": lambda v: _is_int(v, 1, 30_000),
    "num_det_classes": lambda v: _is_int(v, 1, 30_000),
    "num_seg_classes": lambda v: _is_int(v, 2, 30_000),
    "width_mult": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    and math.isfinite(v) and 0.1 <= v <= 4.0,
    "divisible_by": lambda v: _is_int(v, 1, 64),
    "padding": lambda v: v in ("torch", "tf"),
    "output_stride": lambda v: v in (8, 16, 32) and not isinstance(v, bool),
    "align_corners": lambda v: isinstance(v, bool),
    "aspp": lambda v: isinstance(v, bool),
    "anchor_layout": lambda v: v in ("tf", "torchvision"),
    "score_activation": lambda v: v in ("softmax", "sigmoid"),
    "seg_skip": lambda v: v is None or v in ("layer_4", "layer_7", "layer_14"),
    "image_size": lambda v: _is_int(v, 16, 4096),
    "box_scales": lambda v: isinstance(v, (tuple, list)) and len(v) == 4
    and all(_is_number(x) and 0 < x <= 1e4 for x in v),
    "score_threshold": lambda v: _is_number(v) and 0 <= v < 1,
    "nms_iou": lambda v: _is_number(v) and 0 < v <= 1,
    "max_detections": lambda v: _is_int(v, 1, 100_000),
    "class_agnostic_nms": lambda v: isinstance(v, bool),
    "od_api_width": lambda v: isinstance(v, bool),
}  # fmt: skip


@dataclass
class Weights:
    """Weights recognized by ``open_weights``.

    Attributes:
        source: what was given (a name or a path), for messages.
        kind: ``"entry"``, ``"converted"``, ``"checkpoint"``, ``"state_dict"`` or
            ``"torchvision"``.
        builder: the registered builder the tensors are for.
        architecture: the builder options they need (of the builder's registered
            ``architecture``).
        entry: the weights entry, for ``kind == "entry"``.
    """

    source: str
    kind: str
    builder: str
    architecture: dict[str, Any]
    entry: WeightsEntry | None = None
    _state: dict[str, Tensor] | None = field(default=None, repr=False)

    def state_dict(self, progress: bool = True) -> dict[str, Tensor]:
        """The tensors in ``builder``'s state-dict keys (an entry's are fetched now: from
        the cache, or downloaded with a progress bar, sha256 checked, and converted)."""
        if self._state is None:
            assert self.entry is not None
            if self.entry.file_format == "torchvision":
                from backbones.weights import load_torchvision_state_dict

                state = _from_torchvision(load_torchvision_state_dict(self.entry.name))
            else:
                state = entry_state_dict(self.entry, progress)
            self._state = state
        return self._state

    def describe(self) -> str:
        """``"<source> (a <kind> of <builder>)"`` for messages."""
        what = {
            "entry": "weights entry",
            "converted": "converted file",
            "checkpoint": "task checkpoint",
            "state_dict": "state dict",
            "torchvision": "torchvision state dict",
        }[self.kind]
        return f"{self.source} (a {what} of {self.builder})"


def entry_state_dict(entry: WeightsEntry, progress: bool = True) -> dict[str, Tensor]:
    """Converted state dict of a TF entry: from the cache, or downloaded and converted once.

    Raises:
        RuntimeError: no network, a checksum mismatch (``fetch_source``), or the TF readers
            cannot be imported (the ``tf`` extra is missing).
    """
    from backbones.weights import load_state_dict_file

    if entry.file_format == "torchvision":
        raise ValueError(f"{entry.name!r} is torchvision's file; load it with the classifier")
    if not entry.cache_path.is_file():
        source = fetch_source(entry, progress)
        try:
            from heads.tf_import.convert import convert_entry
        except ImportError as err:
            raise RuntimeError(
                f"converting {source} needs the TF readers: pip install 'mobilezoo[tf]' "
                f"({err}); or convert elsewhere with `mobilezoo convert` and put the result "
                f"at {entry.cache_path}"
            ) from err
        convert_entry(entry, source, entry.cache_path, builders=get_model_builder)
    return load_state_dict_file(entry.cache_path)


# -- recognizing ----------------------------------------------------------------------------
def find_entry(name: str, builder: str | None = None) -> WeightsEntry | None:
    """The entry called ``name``: of ``builder`` when it has one, else of any builder
    (ImageNet classifier entries first)."""
    entries = list_weights()
    for entry in entries:
        if entry.name == name and entry.builder == builder:
            return entry
    for entry in sorted(entries, key=lambda e: e.builder != CLASSIFIER):
        if entry.name == name:
            return entry
    return None


def open_weights(weights: str | Path, builder: str | None = None) -> Weights:
    """Recognize ``weights`` (a weights name or a file of a kind listed in the module doc).

    Args:
        weights: a name of ``heads.pretrained.list_weights()`` or a file path.
        builder: the builder asking; an entry name of that builder is preferred.

    Raises:
        WeightsNotFoundError: (a ``FileNotFoundError``) neither a weights name nor an
            existing file.
        WeightsError: (a ``ValueError``) a file of no known kind, unreadable, or with bad
            metadata (named).
    """
    text = str(weights)
    path = Path(text).expanduser()
    entry = find_entry(text, builder) if isinstance(weights, str) else None
    if entry is not None and not path.is_file():
        arch = {**entry.architecture, **entry.extra}
        if entry.file_format == "torchvision":
            arch = {"width_mult": 1.0, "divisible_by": 8, "padding": "torch"}
        key = "num_classes" if entry.builder != JOINT else "num_det_classes"
        arch[key] = entry.num_classes
        arch = {k: v for k, v in arch.items() if k in get_model_spec(entry.builder).architecture}
        return Weights(text, "entry", entry.builder, arch, entry)
    if not path.is_file():
        names = sorted({e.name for e in list_weights()})
        raise WeightsNotFoundError(
            f"weights {text!r}: no such file, and not a weights name ({', '.join(names)})"
        )
    return _read_file(path, text)


def _read_file(path: Path, source: str) -> Weights:
    obj = _load(path)
    known = f"expected {', '.join(KINDS)}"
    meta: Any = None
    kind = "state_dict"
    state: Any = obj
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        if META_KEY in obj:
            kind, meta = "converted", obj[META_KEY]
        elif any(isinstance(k, str) and k.startswith("model.") for k in state):
            kind, meta = "checkpoint", obj.get("hyper_parameters") or {}
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items())
    ):
        raise WeightsError(f"{path} is not a weights file of a known kind: {known}")
    if kind == "checkpoint":
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    builder = builder_of(state)
    if builder is None:
        raise WeightsError(
            f"{path}: its tensors ({_sample(state)}) are not of a zoo model or torchvision's "
            f"mobilenet_v2; {known}"
        )
    named = meta.get("builder") if kind == "converted" and isinstance(meta, dict) else None
    if builder == "torchvision":
        state = _from_torchvision(state)
        # a converted backbone (builder "mobilenet_v2", torchvision's keys) keeps its metadata:
        # its padding and rounding follow it like any converted file's
        if named == BACKBONE:
            named = CLASSIFIER
        else:
            kind = "torchvision"
        builder = CLASSIFIER
    if named is not None and named != builder:
        raise WeightsError(
            f"{path}: its metadata names builder {str(named)[:60]!r} but its "
            f"tensors are of {builder}"
        )
    _check_finite(state, path)
    arch = _architecture(meta, kind, builder, path)
    if "width_mult" not in arch:  # a bare state dict: its channels tell the width
        arch.update(_width_from_shapes(state, builder))
    classes = {CLASSIFIER: "head.classifier.1.weight", DEEPLAB: "head.classifier.weight"}
    if "num_classes" not in arch and classes.get(builder) in state:  # and the class count
        arch["num_classes"] = int(state[classes[builder]].shape[0])
    return Weights(source, kind, builder, arch, None, state)


def _width_from_shapes(state: dict[str, Tensor], builder: str) -> dict[str, Any]:
    """``width_mult`` and ``divisible_by`` of a published width whose channels the
    backbone tensors have (``{}`` when none fits: the loading then names the shape), by
    ``builder``'s channel rule (SSD: the Object Detection API's ``min_depth`` 16)."""
    channels = []
    for layer in range(18):
        convs = [
            v
            for k, v in state.items()
            if k.startswith(f"backbone.features.{layer}.") and v.dim() == 4
        ]
        if not convs:
            return {}
        channels.append(int(convs[-1].shape[0]))
    found = infer_width(channels, OD_MIN_DEPTH if builder == SSD else MIN_CHANNELS)
    return {} if found is None else {"width_mult": found[0], "divisible_by": found[1]}


def _load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError...
        with path.open("rb") as f:
            head = f.read(4)
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):
            why = "it holds Python objects that could run code on load (refused)"
        elif head != b"PK\x03\x04":
            why = "not a PyTorch zip archive"
        else:
            why = f"truncated or corrupt ({type(err).__name__})"
        raise WeightsError(
            f"cannot load weights file {path} safely (weights_only=True): {why}. Known kinds: "
            f"{', '.join(KINDS)}"
        ) from None


def _sample(state: dict[str, Tensor]) -> str:
    keys = list(state)
    return ", ".join(repr(k[:60]) for k in keys[:3]) + (" ..." if len(keys) > 3 else "")


def builder_of(state: dict[str, Tensor]) -> str | None:
    """The builder whose state-dict keys ``state`` has (``"torchvision"`` for torchvision's
    ``mobilenet_v2``), or ``None``."""
    if not any(k.startswith("backbone.features.") for k in state):
        return "torchvision" if "features.0.0.weight" in state else None
    if any(k.startswith("seg_head.") for k in state):
        return JOINT
    if "head.cls_predictors.0.weight" in state:
        return SSD
    if any(k.startswith("head.cls_predictors.") for k in state):
        return SSDLITE
    if any(k.startswith("head.image_pooling.") for k in state):
        return DEEPLAB
    if "head.classifier.1.weight" in state:
        return CLASSIFIER
    return None


def _from_torchvision(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``features.*`` / ``classifier.*`` as the classifier's keys."""
    prefixes = {"features.": "backbone.features.", "classifier.": "head.classifier."}
    out = {}
    for key, value in state.items():
        for old, new in prefixes.items():
            if key.startswith(old):
                out[new + key[len(old) :]] = value
    return out


def _check_finite(state: dict[str, Tensor], path: Path) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(
            f"{path} holds NaN or infinite values in {len(bad)} tensors, e.g. {bad[0]}"
        )


def _architecture(meta: Any, kind: str, builder: str, path: Path) -> dict[str, Any]:
    """The listed architecture keys of a file's metadata, checked (bounded, plain values)."""
    if not isinstance(meta, dict) or not meta:
        return {}
    try:  # repr recurses once per nesting level: a hostile block nests thousands deep
        size = sum(len(repr(k)) + len(repr(v)) for k, v in meta.items())
    except RecursionError:
        size = _MAX_META_CHARS + 1
    if len(meta) > 200 or size > _MAX_META_CHARS:
        raise WeightsError(f"{path}: its metadata block is too large")
    found: dict[str, Any] = {}
    if kind == "converted":
        # older files kept output_stride and num_classes outside "architecture"
        for part in (meta.get("options"), {"num_classes": meta.get("num_classes")},
                     meta.get("architecture")):  # fmt: skip
            if isinstance(part, dict):
                found.update(part)
    else:
        found = dict(meta)
    arch = {}
    for key in get_model_spec(builder).architecture:
        if key not in found or (found[key] is None and key != "seg_skip"):
            continue
        value = found[key]
        if not _VALID[key](value):
            raise WeightsError(f"{path}: architecture value {key}={str(value)[:40]!r} is invalid")
        arch[key] = value
    return arch


# -- architecture -------------------------------------------------------------------------
def class_predictors(builder: str) -> tuple[str, ...]:
    """State-dict prefixes of the class-dependent layers of ``builder`` (registered with it:
    re-initialized when the class count differs)."""
    return get_model_spec(builder).class_predictors


def builder_defaults(builder: str | Callable[..., Any]) -> dict[str, Any]:
    """Default values of a builder's arguments (by builder name or function)."""
    fn = get_model_builder(builder) if isinstance(builder, str) else builder
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def needed_architecture(weights: Weights, builder: str, part: str = "model") -> dict[str, Any]:
    """What ``weights`` decide of ``builder``'s options: all of their architecture when
    they are ``builder``'s own and loaded whole (``part="model"``), else the backbone's
    (``width_mult``, ``divisible_by``, ``padding``)."""
    if part == "model" and weights.builder == builder:
        return dict(weights.architecture)
    return {k: v for k, v in weights.architecture.items() if k in BACKBONE_ARCHITECTURE}


def architecture_of(
    builder: Callable[..., Any] | str,
    weights: str | Path | None,
    weights_backbone: str | Path | None = None,
    **given: Any,
) -> dict[str, Any]:
    """Builder options after applying those that the weights need.

    ``given`` holds the caller's options; ``None`` means "not set". A value the weights
    need replaces an unset or default one; a value set to something else than both the
    default and the weights' raises ``ValueError`` (the weights would not fit), except for
    ``SUGGESTED`` options (class count, output stride, image size), where the caller wins.
    ``weights_backbone`` decides the backbone options, ``weights`` (applied after it) the
    whole architecture when they are of this builder, else the backbone's too.
    """
    name = builder if isinstance(builder, str) else builder.__name__
    defaults = builder_defaults(builder)
    out = dict(given)
    for source, part in ((weights_backbone, "backbone"), (weights, "model")):
        if source is None:
            continue
        needed = needed_architecture(open_weights(source, name), name, part)
        for key, value in needed.items():
            if key not in out:
                continue
            if key in SUGGESTED:
                out[key] = value if out[key] is None else out[key]
                continue
            if key in POSTPROCESS_OPTIONS:  # fields of the ``postprocess`` group
                default = getattr(PostprocessOptions(), key)
                out[key] = value if out[key] == default else out[key]
                continue
            if isinstance(value, list):
                value = tuple(value)  # a sequence option (box_scales) as the builder types it
            mine = out[key]
            if mine is not None and mine != value and mine != defaults.get(key, value):
                option = "weights_backbone" if part == "backbone" else "weights"
                raise WeightsError(f"{option}={source!s} need {key}={value!r}, got {key}={mine!r}")
            out[key] = value
    return out
