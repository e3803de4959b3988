"""Reading TF frozen graphs (``frozen_inference_graph.pb`` of the TF model-zoo tarballs):
the constants that hold the trained variables.

Parsing uses TensorFlow's own protobuf definitions (``GraphDef``, ``TensorProto``) as
shipped, generated, in the ``tensorboard`` package, and its ``make_ndarray``: no
TensorFlow needed. Freezing turns every variable into a ``Const`` node of the same name
(``.../weights``, ``.../BatchNorm/gamma`` ...), in TF layouts (conv ``HWIO``, depthwise
``HWC1``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

#: names of trained variables (other constants, e.g. resize sizes, are not weights)
VARIABLE_NAME = re.compile(
    r".+/(weights|depthwise_weights|biases|BatchNorm/(gamma|beta|moving_mean|moving_variance))$"
)


def _protos() -> tuple[Any, Any]:
    try:
        from tensorboard.compat.proto import graph_pb2
        from tensorboard.util import tensor_util
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading TF frozen graphs needs the 'tensorboard' package (TF's protobuf "
            "definitions): pip install 'mobilezoo[tf]'"
        ) from err
    return graph_pb2, tensor_util


def read_graph(path: str | Path) -> Any:
    """The ``GraphDef`` of a binary ``.pb`` file."""
    graph_pb2, _ = _protos()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"frozen graph not found: {path}")
    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(path.read_bytes())
    except Exception as err:  # google.protobuf.message.DecodeError
        raise ValueError(f"{path} is not a binary TF GraphDef: {err}") from err
    return graph


def read_frozen_graph_variables(path: str | Path) -> dict[str, np.ndarray]:
    """``{variable name: array}`` of the ``Const`` nodes that are trained variables."""
    _, tensor_util = _protos()
    out = {}
    for node in read_graph(path).node:
        if node.op == "Const" and VARIABLE_NAME.match(node.name):
            out[node.name] = np.asarray(tensor_util.make_ndarray(node.attr["value"].tensor))
    if not out:
        raise ValueError(f"{path}: no constant named like a TF variable (.../weights); not frozen?")
    return out


def frozen_graph_hints(path: str | Path) -> dict[str, Any]:
    """What the graph says about options: ``align_corners`` of its last bilinear resize."""
    hints: dict[str, Any] = {}
    for node in read_graph(path).node:
        if node.op == "ResizeBilinear" and "align_corners" in node.attr:
            hints["align_corners"] = bool(node.attr["align_corners"].b)
    return hints
