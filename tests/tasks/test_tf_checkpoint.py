"""TF checkpoint and frozen-graph readers on small files written by TensorFlow itself
(``data/tf_small``, made by ``data/make_tf_fixtures.py``): values, dtypes and names."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from heads.tf_import.checkpoint import _snappy_decompress, read_checkpoint, read_table

DATA = Path(__file__).parent / "data"
SMALL = DATA / "tf_small"


def fixture_variables() -> dict[str, np.ndarray]:
    spec = importlib.util.spec_from_file_location("make_tf_fixtures", DATA / "make_tf_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fixture_variables()


def test_checkpoint_written_by_tensorflow_reads_back_exactly() -> None:
    expected = fixture_variables()
    read = read_checkpoint(SMALL / "model.ckpt")
    assert set(read) == set(expected)
    for name, value in expected.items():
        assert read[name].dtype == value.dtype, name  # float32, float64 and float16
        np.testing.assert_array_equal(read[name], value)


def test_checkpoint_keeps_other_tensors_on_request() -> None:
    everything = read_checkpoint(SMALL / "model.ckpt.index", names_like_variables=False)
    assert {"global_step", "MobilenetV2/Conv/weights/RMSProp"} <= set(everything)
    assert everything["global_step"].dtype == np.int64


def test_checkpoint_index_is_a_sorted_table_with_the_bundle_header_first() -> None:
    keys = [key for key, _ in read_table(SMALL / "model.ckpt.index")]
    assert keys[0] == b"" and keys == sorted(keys) and len(keys) == 87


def test_bad_index_files_are_named() -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt\.index"):
        read_checkpoint(SMALL / "missing.ckpt")
    with pytest.raises(ValueError, match="bad table magic number"):
        read_table(SMALL / "frozen.pb")


def test_snappy_literal_and_overlapping_copy() -> None:
    # 12 bytes: literal "abc", then a copy of 9 bytes from 3 back (overlapping itself)
    stream = bytes([12, (3 - 1) << 2]) + b"abc" + bytes([1 | ((9 - 4) << 2), 3])
    assert _snappy_decompress(stream) == b"abcabcabcabc"


def test_frozen_graph_written_by_tensorflow() -> None:
    pytest.importorskip("tensorboard", reason="tensorboard (TF's protobuf definitions) missing")
    from heads.tf_import.graphdef import frozen_graph_hints, read_frozen_graph_variables

    expected = fixture_variables()
    read = read_frozen_graph_variables(SMALL / "frozen.pb")
    assert set(read) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value)
    assert frozen_graph_hints(SMALL / "frozen.pb") == {"align_corners": True}


def test_converted_ssdlite_reproduces_tensorflow_ops() -> None:
    """An SSDLite built with TF ops from TF's variable names (make_tf_fixtures.py: "SAME"
    convolutions, BN epsilon 1e-3, 300x300) against our converted model: box encodings
    and class logits equal after the box-code and COCO-label reordering."""
    import torch

    from heads import ssdlite_mobilenet_v2
    from heads.categories import coco_category_ids
    from heads.tf_import import convert_variables, ssdlite_mappings

    spec = importlib.util.spec_from_file_location("make_tf_fixtures", DATA / "make_tf_fixtures.py")
    assert spec is not None and spec.loader is not None
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    reference = np.load(SMALL / "ssdlite_outputs.npz")
    model = ssdlite_mobilenet_v2(num_classes=80, image_size=300, padding="tf").eval()
    variables = fixtures.ssdlite_fixture_variables()
    state, unused = convert_variables(model, variables, ssdlite_mappings(model), "tf")
    assert unused == []
    model.load_state_dict(state)
    image = torch.from_numpy(fixtures.ssdlite_fixture_image()).permute(2, 0, 1)[None]
    with torch.no_grad():
        cls_logits, box_deltas = model.forward_raw(image)
    assert box_deltas.shape == (1, 1917, 4)  # TF's 1917 anchors at 300x300
    tf_boxes = reference["box_encodings"][:, [1, 0, 3, 2]]  # (ty, tx, th, tw) -> ours
    np.testing.assert_allclose(box_deltas[0].numpy(), tf_boxes, rtol=1e-3, atol=1e-3)
    anchors = reference["class_anchors"]
    tf_classes = reference["class_logits"][:, [0, *coco_category_ids()]]
    np.testing.assert_allclose(cls_logits[0, anchors].numpy(), tf_classes, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
        symmetric = ssdlite_mobilenet_v2(num_classes=80, image_size=300).eval()
        symmetric.load_state_dict(state)
        _, other = symmetric.forward_raw(image)
    assert np.abs(other[0].numpy() - tf_boxes).max() > 1e-2  # PyTorch padding differs
