"""Reading Keras MobileNetV2 files (``.h5``, ``.weights.h5``, ``.keras``) with ``h5py`` and
``zipfile`` alone: no TensorFlow or Keras at run time.

Three layouts exist:

- legacy HDF5 of a whole model (``model.save("m.h5")``, Keras 2 and 3): ``model_weights``
  holds one group per layer, listed in ``model.layers`` order by the ``layer_names``
  attribute, each with its ``weight_names`` (``Conv1/kernel:0`` in Keras 2, ``Conv1/kernel``
  in Keras 3);
- legacy HDF5 of weights only (``save_weights``; the files ``keras.applications``
  downloads): the same at the root;
- Keras 3 (``.weights.h5`` and the ``model.weights.h5`` inside a ``.keras`` zip):
  ``layers/<class name>_<k>/vars/<i>``: layers are named by class and creation count
  (``conv2d_3``), not by their model names, and variables by position.

Either way the convolution layers come out in execution order with the BatchNorm that follows
each, and ``families.canonical_variables`` names them by position: the layer names are not
needed, so a model renamed or built by another script reads the same.
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from heads.tf_import.families import (
    Layer,
    backbone_scopes,
    canonical_variables,
    unknown_file_message,
)

try:
    import h5py
except ImportError:  # pragma: no cover - depends on the environment
    h5py = None

#: Keras variable order of a BatchNormalization layer (center and scale on)
_KERAS_BN = ("gamma", "beta", "moving_mean", "moving_variance")
_COUNTED = re.compile(r"^(?P<cls>[a-z0-9_]+?)(?:_(?P<k>\d+))?$")


class NotMobileNetV2(ValueError):
    """A Keras file whose layers are not a MobileNetV2's (``names``: its layer names)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(f"layers {names[:3]} do not form a MobileNetV2")


def _need_h5py() -> Any:
    if h5py is None:
        raise ImportError(
            "reading Keras .h5 / .keras files needs h5py: pip install 'mobilezoo[tf]'"
        )
    return h5py


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _short(name: str) -> str:
    """``"block_1_expand/kernel:0"`` -> ``"kernel"``."""
    return name.rsplit("/", 1)[-1].split(":")[0]


def _role(weight_names: list[str], arrays: list[np.ndarray]) -> str | None:
    """``"bn"``, ``"depthwise"``, ``"conv"``, ``"linear"`` or ``None`` (no weights)."""
    if not arrays:
        return None
    short = [_short(n) for n in weight_names]
    if "moving_mean" in short:
        return "bn"
    kernel = arrays[short.index("kernel")] if "kernel" in short else arrays[0]
    if "depthwise_kernel" in short or (
        kernel.ndim == 4 and kernel.shape[0] > 1 and kernel.shape[3] == 1
    ):
        return "depthwise"
    return "conv" if kernel.ndim == 4 else "linear" if kernel.ndim == 2 else None


def _chain(items: list[tuple[str, str | None, list[str], list[np.ndarray]]]) -> list[Layer]:
    """Layers (each with the BatchNorm that follows it) from ``(name, role, weight names,
    arrays)`` in model order."""
    layers: list[Layer] = []
    for name, role, weight_names, arrays in items:
        short = [_short(n) for n in weight_names]
        if role == "bn":
            if not layers or layers[-1].batchnorm:
                raise NotMobileNetV2([i[0] for i in items])
            keys = short if set(short) <= set(_KERAS_BN) else list(_KERAS_BN)
            layers[-1].batchnorm = dict(zip(keys, arrays, strict=True))
        elif role is not None:
            values = dict(zip(short, arrays, strict=True))
            kernel = values.get("kernel", values.get("depthwise_kernel", arrays[0]))
            bias = values.get("bias")
            layers.append(Layer(role, kernel, name, bias))  # type: ignore[arg-type]
    return layers


def _legacy_layers(group: Any) -> list[Layer]:
    """Layers of a legacy HDF5 weights group (``model_weights`` or the root). A nested
    model (a MobileNetV2 used as one layer of the user's model) lists all its weights under
    one layer: they are split by their layer prefix, in order of first appearance (its
    trainable weights come first, in layer order)."""
    items = []
    for raw in group.attrs["layer_names"]:
        layer = group[_text(raw)]
        names = [_text(n) for n in layer.attrs.get("weight_names", [])]
        parts: dict[str, list[str]] = {}
        for n in names:
            parts.setdefault(n.rsplit("/", 1)[0] if "/" in n else _text(raw), []).append(n)
        for part, part_names in parts.items():
            arrays = [np.asarray(layer[n]) for n in part_names]
            items.append((part, _role(part_names, arrays), part_names, arrays))
    return _chain(items)


def _counted(group: Any) -> tuple[dict[str, list[str]], list[Any]]:
    """Keys of a Keras 3 ``layers`` group with weights, by layer class in creation order,
    and the groups of nested models (which have ``layers`` of their own)."""
    queues: dict[str, list[tuple[int, str]]] = {}
    nested = []
    for key in group["layers"]:
        child = group["layers"][key]
        if "layers" in child and len(child["layers"]):
            nested.append(child)
        match = _COUNTED.match(key)
        if match is None or not len(child.get("vars", {})):
            continue
        queues.setdefault(match["cls"], []).append((int(match["k"] or 0), key))
    return {c: [k for _, k in sorted(q)] for c, q in queues.items()}, nested


def _keras3_layers(group: Any) -> list[Layer]:
    """Layers of a Keras 3 weights file: one queue per layer class in creation order,
    interleaved by MobileNetV2's order of plain and depthwise convolutions. A MobileNetV2
    nested as one layer of the user's model is found inside it; the outer model's dense or
    conv layer is then the head."""
    queues, nested = _counted(group)
    head_queues: dict[str, list[str]] = {}
    body = group
    if "depthwise_conv2d" not in queues and len(nested) == 1:
        body, head_queues = nested[0], queues
        queues, _ = _counted(body)
    known = {"conv2d", "depthwise_conv2d", "batch_normalization", "dense"}
    if set(queues) - known or set(head_queues) - {"conv2d", "dense"}:
        raise NotMobileNetV2(sorted(body["layers"]))

    def arrays(owner: Any, key: str) -> list[np.ndarray]:
        variables = owner["layers"][key]["vars"]
        return [np.asarray(variables[i]) for i in sorted(variables, key=int)]

    def layer(owner: Any, key: str, kind: str) -> Layer:
        values = arrays(owner, key)
        return Layer(kind, values[0], key, values[1] if len(values) > 1 else None)  # type: ignore[arg-type]

    convs = list(queues.get("conv2d", []))
    depthwise = list(queues.get("depthwise_conv2d", []))
    norms = queues.get("batch_normalization", [])
    layers: list[Layer] = []
    for _, kind in backbone_scopes():
        queue = depthwise if kind == "depthwise" else convs
        if not queue:
            break
        layers.append(layer(body, queue.pop(0), kind))
    # A head after layer_19: a 1x1 conv (left in the conv queue) or a dense layer.
    layers += [layer(body, k, "conv") for k in convs]
    layers += [layer(body, k, "linear") for k in queues.get("dense", [])]
    layers += [layer(group, k, "conv") for k in head_queues.get("conv2d", [])]
    layers += [layer(group, k, "linear") for k in head_queues.get("dense", [])]
    if len(norms) > len(layers) or depthwise:
        raise NotMobileNetV2(sorted(body["layers"]))
    for item, key in zip(layers, norms, strict=False):
        item.batchnorm = dict(zip(_KERAS_BN, arrays(body, key), strict=True))
    return layers


def keras_layers(path: str | Path) -> list[Layer]:
    """The convolution layers of a Keras file in execution order (Keras layouts: ``HWIO``,
    depthwise ``HWC1``, dense ``IO``), each with its BatchNorm.

    Raises:
        ValueError: the file is not a Keras weights file (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras file not found: {path}")
    lib = _need_h5py()
    if path.suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as archive:
                data = archive.read("model.weights.h5")
        except (zipfile.BadZipFile, KeyError) as err:
            raise ValueError(f"{path} is not a Keras 3 .keras archive: {err}") from err
        with lib.File(io.BytesIO(data), "r") as f:
            return _keras3_layers(f)
    try:
        f = lib.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not an HDF5 file: {err}") from err
    with f:
        if "model_weights" in f:
            return _legacy_layers(f["model_weights"])
        if "layer_names" in f.attrs:
            return _legacy_layers(f)
        if "layers" in f:
            return _keras3_layers(f)
    raise ValueError(f"{path} is an HDF5 file but not one Keras wrote (no layer_names or layers)")


def read_keras_variables(path: str | Path) -> dict[str, np.ndarray]:
    """TF-slim-named variables (layout ``"tf"``) of a Keras MobileNetV2 file."""
    try:
        layers = keras_layers(path)
    except NotMobileNetV2 as err:
        raise ValueError(unknown_file_message(str(path), err.names)) from err
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from err
    return canonical_variables(layers, "tf", str(path))
