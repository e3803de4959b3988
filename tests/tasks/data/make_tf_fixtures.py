"""Writes the small TF-made test files in ``tf_small/`` (run once, with TensorFlow):

    python tests/tasks/data/make_tf_fixtures.py tests/tasks/data/tf_small

- ``model.ckpt.index`` / ``model.ckpt.data-00000-of-00001``: a TF1 ``Saver`` (V2 format)
  checkpoint of the variables of ``fixture_variables()`` plus an optimizer slot and
  ``global_step``, as TF's model-zoo checkpoints hold them;
- ``frozen.pb``: a frozen GraphDef with the same values as ``Const`` nodes and a
  ``ResizeBilinear`` with ``align_corners=True``.

The tests rebuild the expected values with ``fixture_variables()`` (numpy only).
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


if __name__ == "__main__":
    main(sys.argv[1])
