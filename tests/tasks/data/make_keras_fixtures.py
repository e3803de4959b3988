"""Writes the small Keras-made MobileNetV2 test files in ``keras_small/`` (run once, with
TensorFlow, Keras 3, tf-keras and the TF Model Garden; the tests need none of them):

    python tests/tasks/data/make_keras_fixtures.py tests/tasks/data/keras_small

Every model is the real architecture of its family (``keras.applications.MobileNetV2``,
``official.vision`` ``MobileNet(model_id="MobileNetV2")``) at width 0.35 and a 96x96 input,
with random weights of a sane scale (BatchNorm statistics random too, so that folding them
matters), saved the way users get such files:

- ``keras3_classifier.h5``: Keras 3 ``model.save`` legacy HDF5, 5 classes (dense head);
- ``keras3_backbone.keras``: Keras 3 native zip, ``include_top=False``;
- ``keras3_nested.keras`` / ``keras3_nested.h5``: the usual fine-tuning model, a
  ``Sequential`` of the MobileNetV2 backbone (one nested layer), pooling and a 3-class dense;
- ``keras2_classifier.weights.h5``: Keras 2 (tf-keras) ``save_weights``, the layout of the
  files ``keras.applications`` downloads (``Conv1/kernel:0``), 5 classes;
- ``keras_convhead_float.tflite``: TF Lite float of a Keras backbone with a 1x1 conv
  classifier (7 classes), as TF-slim heads are;
- ``keras_float16.tflite``: the Keras 3 classifier with float16 weights (``DEQUANTIZE``
  operators feed the convolutions);
- ``keras_int8_channel.tflite`` / ``keras_int8_tensor.tflite``: the Keras 3 classifier
  after post-training int8 quantization, per-channel and per-tensor weights (float I/O);
- ``garden_int8.tflite``: a TF2 Model Garden MobileNetV2 classifier (backbone +
  global pooling + dense, 6 classes), full-integer int8 with int8 input and output.
- ``tiny_cnn.tflite``: two convolutions, no MobileNetV2 (the unknown-file message);
- ``keras_outputs.npz``: Keras's own outputs on the test photos (``../shared/tf-weights/
  photos``, bilinear-resized to 96x96, ``x / 127.5 - 1``) for the three Keras files:
  pre-softmax logits ``[photos, classes]``, backbone features ``[photos, 3, 3, 1280]``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SIZE = 96
ALPHA = 0.35
ROOT = Path(__file__).resolve().parents[3]
PHOTO_DIR = ROOT.parent / "shared" / "tf-weights" / "photos"
PHOTOS = ("grace_hopper.bmp", "cat.bmp", "parrot.jpg", "bird_segmentation.bmp")


def photos() -> np.ndarray:
    """``[4, 96, 96, 3]`` float inputs in [-1, 1], as the tests make them."""
    from PIL import Image

    out = []
    for name in PHOTOS:
        with Image.open(PHOTO_DIR / name) as image:
            rgb = image.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
            out.append(np.array(rgb).astype(np.float32) / 127.5 - 1.0)
    return np.stack(out)


def randomize(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Random weights of a sane scale in every variable, by its role."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        name = getattr(w, "path", w.name).split(":")[0]
        shape = tuple(w.shape)
        if name.endswith("depthwise_kernel") or (
            len(shape) == 4 and shape[3] == 1 and shape[0] > 1
        ):
            v = rng.standard_normal(shape) * np.sqrt(2.0 / (shape[0] * shape[1]))
        elif name.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            v = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            if len(shape) == 2 or shape[-1] < 10:  # the classifier: spread the logits
                v *= 2.0
        elif name.endswith(("gamma", "moving_variance")):
            v = rng.uniform(0.5, 1.5, shape)
        else:  # beta, moving_mean, bias
            v = rng.normal(0.0, 0.2, shape)
        values.append(v.astype(np.float32))
    model.set_weights(values)


def calibrate(model, data: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """Set every BatchNorm's moving statistics to those of its input on ``data`` (one
    training-mode pass with momentum 0), as training leaves them: each layer then
    normalizes its input, the features depend on the image and stay of order one (with
    random statistics they drift with depth until float32 rounding alone passes 1e-4 in
    the logits, or collapse to the same output for every photo)."""
    norms = [la for la in _all_layers(model) if hasattr(la, "moving_mean")]
    saved = [la.momentum for la in norms]
    for la in norms:
        la.momentum = 0.0
    model(data, training=True)
    for la, momentum in zip(norms, saved, strict=True):
        la.momentum = momentum


def _all_layers(model):  # type: ignore[no-untyped-def]
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def calibration_data() -> np.ndarray:
    """The photos, their mirror images and noisy copies ``[16, 96, 96, 3]``."""
    data = photos()
    rng = np.random.default_rng(9)
    noisy = np.clip(data + rng.normal(0, 0.3, data.shape), -1, 1)
    return np.concatenate([data, data[:, :, ::-1], noisy, noisy[:, ::-1]]).astype(np.float32)


def to_tflite(model, mode: str, data: np.ndarray) -> bytes:  # type: ignore[no-untyped-def]
    """TF Lite bytes: ``"float"``, ``"float16"`` (float16 weights), ``"int8_channel"``,
    ``"int8_tensor"`` (float I/O) or ``"int8_io"`` (full integer, int8 input and output)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":  # weights stored in float16, DEQUANTIZE ops before the convs
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode != "float":

        def representative():  # type: ignore[no-untyped-def]
            for x in data:
                yield [x[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if mode == "int8_tensor":
            converter._experimental_disable_per_channel = True
        if mode == "int8_io":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter.convert()


def keras3_models() -> dict[str, object]:
    import keras

    def app(**kwargs):  # type: ignore[no-untyped-def]
        return keras.applications.MobileNetV2(
            input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None, **kwargs
        )

    classifier = app(classes=5, classifier_activation=None)
    randomize(classifier, 1)
    calibrate(classifier, calibration_data())
    backbone = app(include_top=False)
    randomize(backbone, 2)
    calibrate(backbone, calibration_data())
    base = app(include_top=False)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True)(base.output)
    x = keras.layers.Conv2D(7, 1, name="Logits")(x)
    convhead = keras.Model(base.input, keras.layers.Flatten()(x))
    randomize(convhead, 3)
    calibrate(convhead, calibration_data())
    nested = keras.Sequential(  # the usual fine-tuning model: MobileNetV2 as one layer
        [keras.Input((SIZE, SIZE, 3)), app(include_top=False),
         keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )  # fmt: skip
    randomize(nested, 7)
    calibrate(nested, calibration_data())
    return {"classifier": classifier, "backbone": backbone, "convhead": convhead, "nested": nested}


def save_nested(model, out: Path, outputs: dict[str, np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    """The nested model as ``.keras`` and legacy ``.h5``, with Keras's logits."""
    for name in ("keras3_nested.keras", "keras3_nested.h5"):
        model.save(out / name)
        outputs[name] = np.asarray(model(photos(), training=False))


def keras2_classifier():  # type: ignore[no-untyped-def]
    import tf_keras

    model = tf_keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=ALPHA, weights=None, classes=5,
        classifier_activation=None,
    )  # fmt: skip
    randomize(model, 4)
    calibrate(model, calibration_data())
    return model


def garden_classifier():  # type: ignore[no-untyped-def]
    """The Model Garden backbone + its classification head (pooling, dense), in tf-keras."""
    _import_garden_backbones()
    import tf_keras
    from official.vision.modeling.backbones import mobilenet

    backbone = mobilenet.MobileNet(
        model_id="MobileNetV2",
        filter_size_scale=ALPHA,
        input_specs=tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3]),
    )
    inputs = tf_keras.Input((SIZE, SIZE, 3), batch_size=1)
    endpoints = backbone(inputs)
    x = endpoints[max(endpoints, key=int)]  # the last: the 1x1 conv to 1280 channels
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(6)(x))
    randomize(model, 6)
    calibrate(model, calibration_data())
    return model


def _import_garden_backbones() -> None:
    """Import ``official.vision.modeling.backbones`` without the packages' ``__init__``
    (which pull in datasets, COCO tools and the training stack the backbone never uses)."""
    import types

    import official

    for package in ("official.vision", "official.core", "official.vision.modeling",
                    "official.vision.modeling.backbones", "official.vision.configs"):  # fmt: skip
        module = types.ModuleType(package)
        module.__path__ = [os.path.join(official.__path__[0], *package.split(".")[1:])]
        sys.modules.setdefault(package, module)


def tiny_cnn() -> bytes:
    """A TF Lite file of a network that is not a MobileNetV2."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="tiny_conv"),
            keras.layers.Conv2D(2, 1, name="tiny_out"),
        ]
    )
    return to_tflite(model, "float", np.zeros((0, SIZE, SIZE, 3), np.float32))


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = photos()
    if len(sys.argv) > 2:  # a quick look at one family: its logits' spread, nothing written
        model = {"keras3": lambda: keras3_models()["classifier"], "keras2": keras2_classifier,
                 "garden": garden_classifier}[sys.argv[2]]()  # fmt: skip
        print(np.round(np.asarray(model(data, training=False)), 2))
        return
    outputs: dict[str, np.ndarray] = {}
    k3 = keras3_models()
    k3["classifier"].save(out / "keras3_classifier.h5")  # type: ignore[attr-defined]
    outputs["keras3_classifier.h5"] = k3["classifier"].predict(data, verbose=0)  # type: ignore[attr-defined]
    k3["backbone"].save(out / "keras3_backbone.keras")  # type: ignore[attr-defined]
    outputs["keras3_backbone.keras"] = k3["backbone"].predict(data, verbose=0)  # type: ignore[attr-defined]
    save_nested(k3["nested"], out, outputs)
    (out / "keras_convhead_float.tflite").write_bytes(to_tflite(k3["convhead"], "float", data))
    (out / "keras_float16.tflite").write_bytes(to_tflite(k3["classifier"], "float16", data))
    for mode in ("int8_channel", "int8_tensor"):
        (out / f"keras_{mode}.tflite").write_bytes(
            to_tflite(k3["classifier"], mode, calibration_data())
        )
    k2 = keras2_classifier()
    k2.save_weights(str(out / "keras2_classifier.weights.h5"))
    outputs["keras2_classifier.weights.h5"] = k2.predict(data, verbose=0)
    garden = garden_classifier()
    (out / "garden_int8.tflite").write_bytes(to_tflite(garden, "int8_io", calibration_data()))
    (out / "tiny_cnn.tflite").write_bytes(tiny_cnn())
    np.savez_compressed(out / "keras_outputs.npz", **outputs)
    for name, value in outputs.items():
        if value.ndim == 2:
            top = np.sort(value, axis=1)
            print(name, "top-1", value.argmax(1), "margin", np.round(top[:, -1] - top[:, -2], 3))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "keras_small"))
