"""TF name mapping and layout conversion, checked without TF files: SSDLite against the
variable list of TF's ssdlite_mobilenet_v2_coco, and hand-computed layouts/BatchNorm."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from heads import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite_mobilenet_v2
from heads.box_coder import BoxCoder
from heads.categories import coco_category_ids
from heads.tf_import import (
    classifier_mappings,
    convert_variables,
    deeplab_mappings,
    infer_builder,
    ssdlite_mappings,
    to_torch_layout,
)
from heads.tf_import.names import tf_block_scope

SSD_VARIABLES = Path(__file__).parent / "data" / "ssdlite_mobilenet_v2_coco_variables.txt"


def tf_ssdlite_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """TF's ssdlite_mobilenet_v2_coco variables with random values of the listed shapes."""
    rng = np.random.default_rng(seed)
    out = {}
    for line in SSD_VARIABLES.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape = line.split("\t")
        values = rng.standard_normal(ast.literal_eval(shape)).astype(np.float32)
        out[name] = np.abs(values) + 0.5 if name.endswith("moving_variance") else values
    return out


def test_every_ssdlite_tf_variable_maps_once_with_matching_shapes() -> None:
    variables = tf_ssdlite_variables()
    model = ssdlite_mobilenet_v2(num_classes=80)
    state, unused = convert_variables(model, variables, ssdlite_mappings(model), "tf")
    assert unused == []  # every TF variable used
    assert set(state) == set(model.state_dict())  # every tensor of ours set (once: checked)
    model.load_state_dict(state)


def test_ssdlite_tf_parameter_count_equals_ours_with_tf_label_space() -> None:
    variables = tf_ssdlite_variables()
    tf_params = sum(v.size for k, v in variables.items() if "moving_" not in k)
    ours = ssdlite_mobilenet_v2(num_classes=90)  # 91 outputs per anchor, like TF's
    assert tf_params == sum(p.numel() for p in ours.parameters())


def test_infer_builder_recognises_the_ssdlite_variables() -> None:
    builder, kwargs = infer_builder(tf_ssdlite_variables(), "tf")
    assert builder == "ssdlite_mobilenet_v2"
    assert kwargs == {"num_classes": 80, "width_mult": 1.0, "divisible_by": 8}


def test_ssdlite_class_outputs_follow_coco_ids_and_background() -> None:
    variables = tf_ssdlite_variables()
    for k, n in enumerate((3, 6, 6, 6, 6, 6)):
        variables[f"BoxPredictor_{k}/ClassPredictor/biases"] = np.arange(n * 91, dtype=np.float32)
    model = ssdlite_mobilenet_v2(num_classes=80)
    state, _ = convert_variables(model, variables, ssdlite_mappings(model), "tf")
    bias = state["head.cls_predictors.1.1.bias"].view(6, 81)  # [anchor, label]
    ids = coco_category_ids()
    assert ids[:3] == [1, 2, 3] and ids[-1] == 90 and len(ids) == 80
    for a in range(6):
        assert bias[a, 0] == a * 91  # background
        assert bias[a, 1:].tolist() == [a * 91 + i for i in ids]


def tf_decode(codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """TF FasterRcnnBoxCoder.decode (scales 10, 10, 5, 5): codes (ty, tx, th, tw), anchors
    and boxes (ymin, xmin, ymax, xmax), written from its formulas."""
    ya, xa = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    ha, wa = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    ty, tx, th, tw = codes.T / np.array([[10.0], [10.0], [5.0], [5.0]])
    w, h = np.exp(tw) * wa, np.exp(th) * ha
    yc, xc = ty * ha + ya, tx * wa + xa
    return np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)


def test_ssdlite_box_outputs_decode_to_tf_boxes() -> None:
    """Per anchor, TF's (ty, tx, th, tw) become our (tx, ty, tw, th): our decoder then gives
    TF's boxes."""
    variables = tf_ssdlite_variables()
    model = ssdlite_mobilenet_v2(num_classes=80)
    state, _ = convert_variables(model, variables, ssdlite_mappings(model), "tf")
    tf_bias = variables["BoxPredictor_2/BoxEncodingPredictor/biases"].reshape(6, 4)
    our_bias = state["head.box_predictors.2.1.bias"].view(6, 4).numpy()
    anchors_xyxy = np.array([[10.0, 20.0, 50.0, 100.0]] * 6)
    ours = BoxCoder().decode(torch.from_numpy(our_bias), torch.from_numpy(anchors_xyxy)).numpy()
    tf = tf_decode(tf_bias.astype(np.float64), anchors_xyxy[:, [1, 0, 3, 2]])
    np.testing.assert_allclose(ours, tf[:, [1, 0, 3, 2]], rtol=1e-5, atol=1e-4)


def test_ssdlite_tf_anchor_order_per_location() -> None:
    """TF create_ssd_anchors: layer 0 is (0.1, 1:1), (0.2, 2:1), (0.2, 1:2); later layers
    the aspect ratios 1, 2, 1/2, 3, 1/3 then the interpolated 1:1 anchor."""
    shapes = ssdlite_mobilenet_v2().anchor_generator.shapes
    assert shapes[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    s, s_next = shapes[1][0][0], shapes[2][0][0]
    assert [a for _, a in shapes[1]] == [1.0, 2.0, 0.5, 3.0, 1.0 / 3.0, 1.0]
    assert shapes[1][-1][0] == pytest.approx(math.sqrt(s * s_next))


def test_tf_block_scopes_follow_tf_numbering() -> None:
    assert [tf_block_scope(i) for i in (1, 2, 3, 18, 19)] == [
        "Conv",
        "expanded_conv",
        "expanded_conv_1",
        "expanded_conv_16",
        "Conv_1",
    ]


def test_classifier_and_deeplab_mappings_cover_every_parameter() -> None:
    for model, mappings in (
        (c := mobilenet_v2_classifier(num_classes=1000), classifier_mappings(c)),
        (d := deeplabv3_mobilenet_v2(aspp=True), deeplab_mappings(d)),
    ):
        covered = {f"{m.conv}.weight" for m in mappings} | {
            f"{m.bn}.{p}" for m in mappings if m.bn for p in ("weight", "bias")
        }
        covered |= {f"{m.conv}.bias" for m in mappings if m.bn is None}
        assert covered == {n for n, _ in model.named_parameters()}
    head = [m.tf_scope for m in deeplab_mappings(d)][-7:]
    expected = ["image_pooling", "aspp0", "aspp1", "aspp2", "aspp3", "concat_projection"]
    assert head == [*expected, "logits/semantic"]


@pytest.mark.parametrize("layout", ["tflite", "tf"])
def test_layouts_give_the_same_convolution(layout: str) -> None:
    rng = np.random.default_rng(0)
    oihw = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    stored = oihw.transpose(0, 2, 3, 1) if layout == "tflite" else oihw.transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(to_torch_layout(stored, "conv", layout), oihw)
    dw = rng.standard_normal((5, 1, 3, 3)).astype(np.float32)  # C1HW
    stored = dw.transpose(1, 2, 3, 0) if layout == "tflite" else dw.transpose(2, 3, 0, 1)
    np.testing.assert_array_equal(to_torch_layout(stored, "depthwise", layout), dw)
    linear = rng.standard_normal((7, 6)).astype(np.float32)
    stored = linear.reshape(7, 1, 1, 6) if layout == "tflite" else linear.T.reshape(1, 1, 6, 7)
    np.testing.assert_array_equal(to_torch_layout(stored, "linear", layout), linear)


def _one_conv_model(eps: float) -> tuple[nn.Module, list]:
    from heads.tf_import.names import ConvMapping

    model = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3, eps=eps)).eval()
    return model, [ConvMapping("MobilenetV2/Conv", "0", "1")]


def test_folded_batchnorm_becomes_identity_plus_bias() -> None:
    model, mappings = _one_conv_model(1e-5)
    w = np.arange(6, dtype=np.float32).reshape(3, 1, 1, 2)  # OHWI
    b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    variables = {"MobilenetV2/Conv/weights": w, "MobilenetV2/Conv/biases": b}
    state, unused = convert_variables(model, variables, mappings, "tflite")
    model.load_state_dict(state)
    x = torch.randn(1, 2, 4, 4)
    expected = torch.einsum("oi,bihw->bohw", torch.from_numpy(w[:, 0, 0]), x) + torch.from_numpy(
        b
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)
    assert unused == []


def test_batchnorm_statistics_keep_tf_epsilon() -> None:
    """TF-slim's BN epsilon is 1e-3; in our module with eps 1e-5 the variance is shifted so
    the output is TF's."""
    model, mappings = _one_conv_model(1e-5)
    rng = np.random.default_rng(1)
    stats = {
        "gamma": np.array([1.0, 2.0, 0.5]),
        "beta": np.array([0.1, 0.2, 0.3]),
        "moving_mean": np.array([0.0, 1.0, -1.0]),
        "moving_variance": np.array([1e-4, 1.0, 4.0]),
    }
    variables = {"MobilenetV2/Conv/weights": rng.standard_normal((1, 1, 2, 3)).astype(np.float32)}
    variables |= {f"MobilenetV2/Conv/BatchNorm/{k}": v.astype(np.float32) for k, v in stats.items()}
    state, _ = convert_variables(model, variables, mappings, "tf")
    model.load_state_dict(state)
    x = torch.randn(1, 2, 2, 2)
    conv = model[0](x)
    view = {k: torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for k, v in stats.items()}
    tf = (conv - view["moving_mean"]) / torch.sqrt(view["moving_variance"] + 1e-3)
    tf = tf * view["gamma"] + view["beta"]
    torch.testing.assert_close(model(x), tf, rtol=1e-5, atol=1e-5)


def test_missing_tf_variable_is_named() -> None:
    model, mappings = _one_conv_model(1e-3)
    with pytest.raises(KeyError, match="MobilenetV2/Conv/weights"):
        convert_variables(model, {}, mappings, "tf")
