"""Frozen-graph reader: a GraphDef written with TF's protobuf definitions (as in the model
zoo's frozen_inference_graph.pb: variables frozen into Const nodes), read back, converted,
and loaded through the coco_tf entry from a tarball (the download replaced by a copy)."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard", reason="tensorboard (TF's protobuf definitions) missing")

from tensorboard.compat.proto import graph_pb2
from tensorboard.util import tensor_util

from heads import get_model_builder, ssdlite_mobilenet_v2
from heads.pretrained import get_weights
from heads.tf_import import convert_file, convert_variables, ssdlite_mappings
from heads.tf_import.graphdef import frozen_graph_hints, read_frozen_graph_variables
from tests.tasks.test_tf_names import tf_ssdlite_variables


def write_frozen_graph(path: Path, variables: dict[str, np.ndarray]) -> Path:
    graph = graph_pb2.GraphDef()
    image = graph.node.add(name="image_tensor", op="Placeholder")
    image.attr["dtype"].type = 4  # DT_UINT8
    for name, value in variables.items():
        node = graph.node.add(name=name, op="Const")
        node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
        node.attr["dtype"].type = 1  # DT_FLOAT
        graph.node.add(name=f"{name}/read", op="Identity", input=[name])
    size = graph.node.add(name="Preprocessor/size", op="Const")  # not a weight
    size.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.array([300, 300])))
    resize = graph.node.add(name="ResizeBilinear", op="ResizeBilinear", input=["x", size.name])
    resize.attr["align_corners"].b = True
    path.write_bytes(graph.SerializeToString())
    return path


def test_frozen_graph_variables_round_trip(tmp_path: Path) -> None:
    variables = tf_ssdlite_variables()
    path = write_frozen_graph(tmp_path / "frozen_inference_graph.pb", variables)
    read = read_frozen_graph_variables(path)
    assert set(read) == set(variables)  # Identity reads and other constants left out
    for name, value in variables.items():
        np.testing.assert_array_equal(read[name], value)
    assert frozen_graph_hints(path) == {"align_corners": True}


def test_frozen_ssdlite_graph_converts_to_our_detector(tmp_path: Path) -> None:
    variables = tf_ssdlite_variables()
    path = write_frozen_graph(tmp_path / "frozen_inference_graph.pb", variables)
    model, meta = convert_file(path, builders=get_model_builder)
    assert meta["builder"] == "ssdlite_mobilenet_v2" and meta["num_classes"] == 80
    assert model.backbone.padding == "tf"
    expected = ssdlite_mobilenet_v2(num_classes=80, padding="tf")
    state, _ = convert_variables(expected, variables, ssdlite_mappings(expected), "tf")
    for key, value in state.items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_coco_tf_entry_from_a_model_zoo_tarball(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = tf_ssdlite_variables(seed=3)
    folder = tmp_path / "ssdlite_mobilenet_v2_coco_2018_05_09"
    folder.mkdir()
    write_frozen_graph(folder / "frozen_inference_graph.pb", variables)
    tarball = tmp_path / "release.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        shutil.copy(tarball, dst)

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    try:
        model = ssdlite_mobilenet_v2(weights="coco_tf")
        assert get_weights("ssdlite_mobilenet_v2", "coco_tf").cache_path.is_file()
    finally:
        torch.hub.set_dir(previous)
    dw = variables["BoxPredictor_3/ClassPredictor_depthwise/depthwise_weights"]  # HWC1
    np.testing.assert_array_equal(
        model.head.cls_predictors[3][0][0].weight.detach().numpy(), dw.transpose(2, 3, 0, 1)
    )
