"""What an exported file needs to be used alone: its model kind, output form, class names,
input size and normalization, stored in the file itself (ONNX ``metadata_props``, OpenVINO
runtime info under ``mobilezoo``), so that ``load_exported(path).predict(images)`` needs
nothing else.

An exported file may come from someone else: the stored values are parsed as JSON, type-
and size-checked, and a file without them (or with broken ones) is still runnable, only
without ``predict``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: key prefix in ONNX ``metadata_props``; the OpenVINO runtime-info section
PREFIX = "mobilezoo"
_MAX_NAMES = 100_000
_MAX_NAME = 200


@dataclass(frozen=True)
class ExportInfo:
    """How to feed an exported model and read what it returns.

    Attributes:
        kind: ``"classifier"``, ``"detector"``, ``"segmenter"`` or ``"joint"``.
        form: the graph's outputs: ``"classifier"``, ``"segmenter"``, ``"raw"``,
            ``"end2end"`` or ``"joint"``.
        input_size: ``(height, width)`` the graph was exported for.
        class_names: one name per class of the output (detector labels index it).
        mean: per-channel mean of ``image / 255`` (RGB).
        std: per-channel std; the input is ``(image / 255 - mean) / std``.
    """

    kind: str
    form: str
    input_size: tuple[int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def props(self) -> dict[str, str]:
        """The values as ``mobilezoo.<field>`` strings (JSON)."""
        return {f"{PREFIX}.{k}": json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> ExportInfo | None:
        """Parse ``props`` (as written by ``props``); ``None`` when they are absent or do
        not hold a valid description."""
        try:
            raw = {k: json.loads(props[f"{PREFIX}.{k}"]) for k in cls.__dataclass_fields__}
            names = raw["class_names"]
            if not (isinstance(names, list) and len(names) <= _MAX_NAMES) or not all(
                isinstance(n, str) and len(n) <= _MAX_NAME for n in names
            ):
                return None
            size = tuple(int(v) for v in raw["input_size"])
            mean = tuple(float(v) for v in raw["mean"])
            std = tuple(float(v) for v in raw["std"])
            numbers_ok = all(math.isfinite(v) for v in (*mean, *std)) and min(std) > 0
            if len(size) != 2 or min(size) < 1 or len(mean) != 3 or len(std) != 3:
                return None
            if not numbers_ok or not all(isinstance(raw[k], str) for k in ("kind", "form")):
                return None
            return cls(raw["kind"], raw["form"], size, tuple(names), mean, std)  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError, RecursionError):
            return None


def stamp(path: Path, info: ExportInfo) -> None:
    """Write ``info`` into the exported file ``path`` (``.onnx`` or OpenVINO ``.xml``)."""
    if path.suffix == ".xml":
        _stamp_openvino(path, info)
    else:
        _stamp_onnx(path, info)


def read_info(path: str | Path) -> ExportInfo | None:
    """The description stored in an exported ``.onnx`` / ``.xml`` file, or ``None``."""
    path = Path(path)
    if path.suffix == ".xml":
        from tasks.export.openvino import _core

        model = _core().read_model(str(path))
        props = {}
        for key in ExportInfo.__dataclass_fields__:
            if model.has_rt_info([PREFIX, key]):
                props[f"{PREFIX}.{key}"] = model.get_rt_info([PREFIX, key]).astype(str)
        return ExportInfo.from_props(props)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ExportInfo.from_props(session.get_modelmeta().custom_metadata_map)


def _stamp_onnx(path: Path, info: ExportInfo) -> None:
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if not p.key.startswith(f"{PREFIX}.")]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in info.props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)


def _stamp_openvino(path: Path, info: ExportInfo) -> None:
    from tasks.export.openvino import _core, _ov

    model = _core().read_model(str(path))
    for key, value in info.props().items():
        model.set_rt_info(value, [PREFIX, key.removeprefix(f"{PREFIX}.")])
    tmp = path.with_name(path.stem + ".tmp.xml")
    _ov().save_model(model, str(tmp), compress_to_fp16=False)
    del model
    os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
    os.replace(tmp, path)


def class_names_of(ckpt: Mapping[str, Any] | None, kind: str, num_classes: int) -> tuple[str, ...]:
    """Class names from a task checkpoint (the detection task's ``class_names`` entry, the
    hyper-parameters' ``class_names``), else the class indices as strings."""
    names: Sequence[Any] | None = None
    if ckpt is not None:
        names = ckpt.get("class_names")
        if names is None:
            hparams = ckpt.get("hyper_parameters") or {}
            names = hparams.get("class_names") if isinstance(hparams, Mapping) else None
    if isinstance(names, Sequence) and not isinstance(names, str) and len(names) == num_classes:
        return tuple(str(n)[:_MAX_NAME] for n in names)
    return tuple(str(i) for i in range(num_classes))


def describe(source: Any, model: Any, kind: str, form: str, size: tuple[int, int],
             builder_args: Mapping[str, Any] | None = None) -> ExportInfo:  # fmt: skip
    """The description of ``model`` exported as ``form`` at ``size``: class names and
    normalization from the checkpoint ``source`` (what its run trained with), from the named
    weights of a builder, else class indices and the data modules' default ``[-1, 1]``."""
    num_classes = int(model.num_det_classes if kind == "joint" else model.num_classes)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    ckpt = None
    if isinstance(source, (str, Path)) and Path(str(source)).suffix == ".ckpt":
        from tasks.checkpoints.io import read_checkpoint

        ckpt = read_checkpoint(source)
        norm = ckpt.get("normalization")
        if isinstance(norm, Mapping) and {"mean", "std"} <= set(norm):
            mean, std = tuple(norm["mean"]), tuple(norm["std"])
    names = class_names_of(ckpt, kind, num_classes)
    weights = (builder_args or {}).get("weights")
    if ckpt is None and isinstance(weights, str) and not Path(weights).suffix:
        from heads.pretrained import get_weights, is_entry_name

        # builder_args come with a builder name only; its own entries describe the input
        builder = str(source)
        entry = get_weights(builder, weights) if is_entry_name(builder, weights) else None
        if entry is not None:

            def per_channel(v: Any) -> tuple[float, ...]:
                return tuple(float(x) / 255 for x in (v if isinstance(v, Sequence) else (v,) * 3))

            mean, std = per_channel(entry.mean), per_channel(entry.std)
            categories = list(entry.categories())
            if len(categories) == num_classes:
                names = tuple(categories)
    return ExportInfo(kind, form, size, names, mean, std)  # type: ignore[arg-type]
