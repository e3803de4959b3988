"""Writes the small TF-made test files in ``tf_small/`` (run once, with TensorFlow):

    python tests/tasks/data/make_tf_fixtures.py tests/tasks/data/tf_small

- ``model.ckpt.index`` / ``model.ckpt.data-00000-of-00001``: a TF1 ``Saver`` (V2 format)
  checkpoint of the variables of ``fixture_variables()`` plus an optimizer slot and
  ``global_step``, as TF's model-zoo checkpoints hold them;
- ``frozen.pb``: a frozen GraphDef with the same values as ``Const`` nodes and a
  ``ResizeBilinear`` with ``align_corners=True``.

- ``ssdlite_outputs.npz``: TF's outputs for one input of an SSDLite-MobileNetV2 built here
  with TF ops from the variables of ``ssdlite_variables.txt`` (TF's ssdlite_mobilenet_v2_coco
  names, values from ``ssdlite_fixture_variables()``), as the TF Object Detection API wires
  it: "SAME" convolutions, BatchNorm epsilon 1e-3, ReLU6, taps on layer_15's expansion and
  layer_19, four extra layers, depthwise-separable box predictors, 300x300 input. Box
  encodings are TF's (ty, tx, th, tw); class logits TF's 91-way COCO order.

The tests rebuild the values with ``fixture_variables()`` / ``ssdlite_fixture_variables()``
(numpy only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def fixture_variables() -> dict[str, np.ndarray]:
    """Deterministic variables with TF-slim names, TF layouts and a few dtypes."""
    rng = np.random.default_rng(2026)
    out: dict[str, np.ndarray] = {}
    for i in range(40):  # enough entries for prefix-compressed keys and restarts
        scope = f"MobilenetV2/expanded_conv_{i}/project"
        out[f"{scope}/weights"] = rng.standard_normal((1, 1, 4 + i % 3, 8)).astype(np.float32)
        out[f"{scope}/BatchNorm/moving_variance"] = rng.random(8).astype(np.float32) + 0.5
    out["MobilenetV2/Conv/weights"] = rng.standard_normal((3, 3, 3, 16)).astype(np.float32)
    out["MobilenetV2/expanded_conv/depthwise/depthwise_weights"] = rng.standard_normal(
        (3, 3, 16, 1)
    ).astype(np.float32)
    out["logits/semantic/biases"] = rng.standard_normal(21).astype(np.float64)
    out["MobilenetV2/big/weights"] = rng.standard_normal((16, 16, 3, 3)).astype(np.float16)
    return out


SSD_VARIABLES = Path(__file__).parent / "ssdlite_mobilenet_v2_coco_variables.txt"
#: anchors of TF's class outputs kept in the fixture (all 91 logits of each)
SSD_CLASS_ANCHORS = np.arange(0, 1917, 13)


def ssdlite_fixture_variables(seed: int = 7) -> dict[str, np.ndarray]:
    """TF's ssdlite_mobilenet_v2_coco variables with random values of a sane scale."""
    import ast

    rng = np.random.default_rng(seed)
    out = {}
    for line in SSD_VARIABLES.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape_text = line.split("\t")
        shape = ast.literal_eval(shape_text)
        if name.endswith("weights"):
            fan_in = shape[0] * shape[1] * (1 if name.endswith("depthwise_weights") else shape[2])
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        elif name.endswith(("gamma", "moving_variance")):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, biases
            value = rng.normal(0.0, 0.1, shape)
        out[name] = value.astype(np.float32)
    return out


def ssdlite_fixture_image() -> np.ndarray:
    """The input ``[300, 300, 3]`` in [-1, 1]."""
    return np.random.default_rng(11).uniform(-1, 1, (300, 300, 3)).astype(np.float32)


def _tf_ssdlite(tf, v: dict[str, np.ndarray], image: np.ndarray):  # type: ignore[no-untyped-def]
    """SSDLite-MobileNetV2 in TF ops, wired as TF's Object Detection API does."""

    def bn(x, scope):  # type: ignore[no-untyped-def]
        p = {
            k: v[f"{scope}/BatchNorm/{k}"]
            for k in ("gamma", "beta", "moving_mean", "moving_variance")
        }
        return tf.nn.batch_normalization(
            x, p["moving_mean"], p["moving_variance"], p["beta"], p["gamma"], 1e-3
        )

    def conv(x, scope, stride=1, act=True):  # type: ignore[no-untyped-def]
        y = bn(tf.nn.conv2d(x, v[f"{scope}/weights"], stride, "SAME"), scope)
        return tf.nn.relu6(y) if act else y

    def dw(x, scope, stride=1):  # type: ignore[no-untyped-def]
        w = v[f"{scope}/depthwise_weights"]
        y = tf.nn.depthwise_conv2d(x, w, [1, stride, stride, 1], "SAME")
        return tf.nn.relu6(bn(y, scope))

    p = "FeatureExtractor/MobilenetV2"
    x = tf.constant(image[None])
    x = conv(x, f"{p}/Conv", 2)
    x = conv(dw(x, f"{p}/expanded_conv/depthwise"), f"{p}/expanded_conv/project", act=False)
    strides = {1: 2, 3: 2, 6: 2, 13: 2}
    taps = []
    for i in range(1, 17):
        s = f"{p}/expanded_conv_{i}"
        e = conv(x, f"{s}/expand")
        if i == 13:
            taps.append(e)  # layer_15/expansion_output
        y = conv(dw(e, f"{s}/depthwise", strides.get(i, 1)), f"{s}/project", act=False)
        x = x + y if strides.get(i, 1) == 1 and x.shape[-1] == y.shape[-1] else y
    x = conv(x, f"{p}/Conv_1")
    taps.append(x)
    for i, d in zip(range(2, 6), (512, 256, 256, 128), strict=True):
        x = conv(x, f"{p}/layer_19_1_Conv2d_{i}_1x1_{d // 2}")
        x = dw(x, f"{p}/layer_19_2_Conv2d_{i}_3x3_s2_{d}_depthwise", 2)
        x = conv(x, f"{p}/layer_19_2_Conv2d_{i}_3x3_s2_{d}")
        taps.append(x)
    boxes, classes = [], []
    for k, t in enumerate(taps):
        for name, per, out in (("BoxEncodingPredictor", 4, boxes), ("ClassPredictor", 91, classes)):
            y = dw(t, f"BoxPredictor_{k}/{name}_depthwise")
            w, b = v[f"BoxPredictor_{k}/{name}/weights"], v[f"BoxPredictor_{k}/{name}/biases"]
            y = tf.nn.conv2d(y, w, 1, "SAME") + b
            out.append(tf.reshape(y, [-1, per]))
    return tf.concat(boxes, 0).numpy(), tf.concat(classes, 0).numpy()


def main(folder: str) -> None:
    import tensorflow as tf

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    values = fixture_variables()
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=k) for k, v in values.items()]
        tf.compat.v1.Variable(np.ones(8, np.float32), name="MobilenetV2/Conv/weights/RMSProp")
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(target / "model.ckpt"), write_meta_graph=False)
    assert len(variables) == len(values)

    frozen = tf.Graph()
    with frozen.as_default():
        for name, value in values.items():
            tf.constant(value, name=name)
        image = tf.compat.v1.placeholder(tf.float32, (1, 9, 9, 3), name="input")
        tf.compat.v1.image.resize_bilinear(image, (17, 17), align_corners=True, name="resize")
    (target / "frozen.pb").write_bytes(frozen.as_graph_def().SerializeToString())
    for junk in target.glob("checkpoint"):
        junk.unlink()

    boxes, classes = _tf_ssdlite(tf, ssdlite_fixture_variables(), ssdlite_fixture_image())
    assert boxes.shape == (1917, 4) and classes.shape == (1917, 91)
    np.savez_compressed(
        target / "ssdlite_outputs.npz",
        box_encodings=boxes,
        class_anchors=SSD_CLASS_ANCHORS,
        class_logits=classes[SSD_CLASS_ANCHORS],
    )


if __name__ == "__main__":
    main(sys.argv[1])
