"""Writes the small TF Lite detection and segmentation test files in ``tflite_heads/`` (run
once, with TensorFlow; the tests need only the TF Lite runtime):

    python tests/tasks/data/make_tflite_head_fixtures.py tests/tasks/data/tflite_heads [GROUP...]

(``GROUP``: ``ssdlite``, ``ssd``, ``ssdlite_od``, ``deeplab``, ``slim_dense``; all by
default.)

Each model is built here in TF ops with the names and wiring of the TF code that made the
released models (random weights of a sane scale, BatchNorm statistics calibrated on the
test photos so that every layer sees inputs of order one), then converted by TF's own TF
Lite converter:

- ``ssdlite_*.tflite``: SSDLite-MobileNetV2 as the Object Detection API builds it
  (``FeatureExtractor/MobilenetV2`` with taps on ``layer_15/expansion_output`` and
  ``layer_19``, four depthwise extra layers of depth 512, 256, 256, 128, six
  ``BoxPredictor_k`` with depthwise + 1x1 predictors, 3 / 6 anchors per location) at width
  0.35 (last conv 1280 channels, as ``ssdlite_mobilenet_v2(width_mult=0.35)``), 3 classes,
  a 160x160 input, exported as ``export_tflite_graph_tf2`` does: sigmoid scores, the anchors
  as a constant ``[N, 4]`` (ycenter, xcenter, h, w), and a ``tf.function`` with
  ``experimental_implements="TFLite_Detection_PostProcess"`` that the converter turns into
  that custom op (``allow_custom_ops``). ``ssdlite_float16.tflite``: float computation,
  float16 weights (keeps the file small); ``ssdlite_int8.tflite``: post-training int8
  (float input, the post-processing op in float).
- ``ssdlite_od_*.tflite``: the same SSDLite with the Object Detection API's own width
  rules at 0.35 (``ssdlite_mobilenet_v2(width_mult=0.35, od_api_width=True)``: every layer
  >= 16 channels, ``Conv_1`` 448, extra layers of depths 179, 89, 89, 44).
- ``ssd_mobilenet_v2_*.tflite``: the Object Detection API's (non-lite) SSD MobileNetV2 the
  same way (``ssd``): its width rules at 0.35 (every layer >= 16 channels, ``Conv_1`` 448,
  extra layers 1x1 + full 3x3 stride-2 conv of depths 179, 89, 89, 44), 1x1 box and class
  convs, the same anchors, options and exports.
- ``deeplab_*.tflite``: Mobile DeepLabv3 as TF DeepLab builds it on MobileNetV2 (features of
  ``layer_18``, atrous blocks past the output stride; ``image_pooling``, ``aspp0``,
  ``concat_projection``, ``logits/semantic``; bilinear resizes with ``align_corners=True``)
  ``deeplab_cityscapes_w050_os8_{float16,int8}.tflite`` (19 classes, width 0.5, output
  stride 8, 97x97) and ``deeplab_ade20k_w100_os16_int8.tflite`` (151 classes, width 1.0,
  output stride 16, 65x65; its float file would be 8 MB). ``float16``: float computation
  with float16 weights; ``int8``: post-training int8, float input and output.
- ``slim_dense_{float16,int8}.tflite``: a TF-slim MobileNetV2 classifier fine-tuned with a
  dense ``Logits/MatMul`` head of 37 classes, no background (``slim_dense``), width 0.35,
  96x96.

The anchors are made here from the Object Detection API's anchor rules (``ssd_anchors``),
not from the zoo's code, so that the converter's check of them is a real one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[3]
PHOTO_DIR = ROOT.parent / "shared" / "tf-weights" / "photos"
PHOTOS = ("grace_hopper.bmp", "cat.bmp", "parrot.jpg", "bird_segmentation.bmp")
#: TF-slim MobileNetV2 (V2_DEF): (expansion, channels, repeats, stride) after ``Conv`` (32)
BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))  # fmt: skip
SSD_SIZE, SSD_WIDTH, SSD_CLASSES = 160, 0.35, 3
#: (name, classes, width, output stride, input size, kinds): width 1.0 in 8 bits only, its
#: float file would be 8 MB
DEEPLABS = (
    ("deeplab_cityscapes_w050_os8", 19, 0.5, 8, 97, ("float16", "int8")),
    ("deeplab_ade20k_w100_os16", 151, 1.0, 16, 65, ("int8",)),
)


def photos(size: int) -> np.ndarray:
    """``[4, size, size, 3]`` float inputs in [-1, 1], as the tests make them."""
    from PIL import Image

    out = []
    for name in PHOTOS:
        with Image.open(PHOTO_DIR / name) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BILINEAR)
            out.append(np.array(rgb).astype(np.float32) / 127.5 - 1.0)
    return np.stack(out)


def calibration_data(size: int) -> np.ndarray:
    """The photos, their mirror images and noisy copies ``[16, size, size, 3]``."""
    data = photos(size)
    rng = np.random.default_rng(9)
    noisy = np.clip(data + rng.normal(0, 0.3, data.shape), -1, 1)
    return np.concatenate([data, data[:, :, ::-1], noisy, noisy[:, ::-1]]).astype(np.float32)


def make_divisible(value: float, divisor: int = 8, min_value: int = 8) -> int:
    """TF-slim's channel rounding (never more than 10% below ``value``)."""
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class Net:
    """A network written in TF ops over a dict of named numpy variables.

    Each layer creates its variables on first use (random, of a sane scale); with
    ``calibrating`` set, a BatchNorm takes the batch's moments as its moving statistics
    (what training leaves them at), so a later plain pass normalizes each layer's input.
    """

    def __init__(self, tf, seed: int) -> None:  # type: ignore[no-untyped-def]
        self.tf = tf
        self.v: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.calibrating = False

    def var(self, name: str, shape: tuple[int, ...], kind: str) -> np.ndarray:
        if name not in self.v:
            if kind == "weights":
                fan_in = shape[0] * shape[1] * (shape[2] if len(shape) == 4 and shape[3] > 1 else 1)
                value = self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            elif kind == "gamma":
                value = self.rng.uniform(0.5, 1.5, shape)
            else:  # beta, biases
                value = self.rng.normal(0.0, 0.2, shape)
            self.v[name] = value.astype(np.float32)
        return self.v[name]

    def bn(self, x, scope: str, eps: float):  # type: ignore[no-untyped-def]
        tf, c = self.tf, int(x.shape[-1])
        gamma = self.var(f"{scope}/BatchNorm/gamma", (c,), "gamma")
        beta = self.var(f"{scope}/BatchNorm/beta", (c,), "beta")
        if self.calibrating:
            mean, var = tf.nn.moments(x, axes=[0, 1, 2])
            var = var.numpy()
            # The small maps give moments of a few values each: a floor keeps a near-constant
            # channel from being amplified until float32 rounding alone shows in the outputs.
            self.v[f"{scope}/BatchNorm/moving_mean"] = mean.numpy()
            self.v[f"{scope}/BatchNorm/moving_variance"] = var + 0.1 * var.mean()
        mean = self.v[f"{scope}/BatchNorm/moving_mean"]
        var = self.v[f"{scope}/BatchNorm/moving_variance"]
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            x, gamma, beta, mean, var, epsilon=eps, is_training=False
        )
        return y

    def conv(self, x, scope, depth, kernel=1, stride=1, rate=1, act="relu6", eps=1e-3, bn=True):  # type: ignore[no-untyped-def]
        tf = self.tf
        w = self.var(f"{scope}/weights", (kernel, kernel, int(x.shape[-1]), depth), "weights")
        y = tf.nn.conv2d(x, w, stride, "SAME", dilations=rate)
        y = self.bn(y, scope, eps) if bn else y + self.var(f"{scope}/biases", (depth,), "biases")
        return {"relu6": tf.nn.relu6, "relu": tf.nn.relu, None: lambda t: t}[act](y)

    def depthwise(self, x, scope, stride=1, rate=1):  # type: ignore[no-untyped-def]
        tf = self.tf
        w = self.var(f"{scope}/depthwise_weights", (3, 3, int(x.shape[-1]), 1), "weights")
        strides = [1, stride, stride, 1]
        y = tf.nn.depthwise_conv2d(x, w, strides, "SAME", dilations=[rate, rate])
        return tf.nn.relu6(self.bn(y, scope, 1e-3))

    def mobilenet_v2(self, x, prefix, width, output_stride=32, conv_1=True, min_depth=8,  # type: ignore[no-untyped-def]
                     finegrain=True):  # fmt: skip
        """TF-slim ``mobilenet_base``; returns ``{"layer_15_expansion", "layer_18",
        "layer_19"}`` (``layer_19`` only with ``conv_1``). ``min_depth``: the fewest channels
        of a scaled layer (the Object Detection API's feature extractors: 16);
        ``finegrain`` (``finegrain_classification_mode``): ``Conv_1`` keeps 1280 channels
        below width 1, else it scales too (``mobilenet_base``'s default, the OD API's)."""

        def depth(channels: float) -> int:
            return make_divisible(channels * width, 8, min_depth)

        out = {}
        x = self.conv(x, f"{prefix}/Conv", depth(32), 3, 2)
        stride, rate, index = 2, 1, 0
        for t, c, n, s in BLOCKS:
            for i in range(n):
                scope = f"{prefix}/expanded_conv" + (f"_{index}" if index else "")
                block_stride = s if i == 0 else 1
                layer_rate = rate
                if block_stride > 1 and stride >= output_stride:
                    rate *= block_stride  # atrous: the stride becomes a dilation
                    block_stride = 1
                else:
                    stride *= block_stride
                    layer_rate = rate
                inputs, h = x, x
                if t > 1:
                    h = self.conv(h, f"{scope}/expand", make_divisible(int(x.shape[-1]) * t))
                    if index == 13:
                        out["layer_15_expansion"] = h
                h = self.depthwise(h, f"{scope}/depthwise", block_stride, layer_rate)
                h = self.conv(h, f"{scope}/project", depth(c), act=None)
                residual = block_stride == 1 and inputs.shape[-1] == h.shape[-1]
                x = inputs + h if residual else h
                index += 1
        out["layer_18"] = x
        if conv_1:
            last = make_divisible(1280 * max(width, 1.0)) if finegrain else depth(1280)
            out["layer_19"] = self.conv(x, f"{prefix}/Conv_1", last)
        return out


# -- SSDLite --------------------------------------------------------------------------------
def ssd_anchors(sizes: list[int]) -> np.ndarray:
    """``[N, 4]`` (ycenter, xcenter, h, w) in [0, 1] by the Object Detection API's
    ``ssd_anchor_generator`` rules (min_scale 0.2, max_scale 0.95, aspect ratios 1, 2, 1/2,
    3, 1/3, ``reduce_boxes_in_lowest_layer``, interpolated 1:1 anchor) on square maps."""
    k_maps = len(sizes)
    scales = [0.2 + (0.95 - 0.2) * i / (k_maps - 1) for i in range(k_maps)] + [1.0]
    rows = []
    for k, size in enumerate(sizes):
        if k == 0:
            specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            specs = [(scales[k], a) for a in (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)]
            specs.append((np.sqrt(scales[k] * scales[k + 1]), 1.0))
        for i in range(size):
            for j in range(size):
                for scale, ratio in specs:
                    rows.append(((i + 0.5) / size, (j + 0.5) / size,
                                 scale / np.sqrt(ratio), scale * np.sqrt(ratio)))  # fmt: skip
    return np.asarray(rows, dtype=np.float32)


def ssdlite(net: Net, x, od_api_width: bool = False):  # type: ignore[no-untyped-def]
    """Box encodings ``[1, N, 4]`` (ty, tx, th, tw), class logits ``[1, N, C + 1]``.
    ``od_api_width``: the Object Detection API's own width rules at ``SSD_WIDTH`` (those of
    ``ssd``: ``min_depth`` 16, ``Conv_1`` and the extra layers scaled); else ``Conv_1``
    keeps 1280 channels and the extra layers their depths."""
    tf = net.tf
    p = "FeatureExtractor/MobilenetV2"
    if od_api_width:
        feats = net.mobilenet_v2(x, p, SSD_WIDTH, min_depth=16, finegrain=False)
    else:
        feats = net.mobilenet_v2(x, p, SSD_WIDTH)
    maps = [feats["layer_15_expansion"], feats["layer_19"]]
    for i, layer_depth in zip(range(2, 6), (512, 256, 256, 128), strict=True):
        mid, depth = layer_depth // 2, layer_depth
        if od_api_width:
            mid, depth = (max(int(d * SSD_WIDTH), 16) for d in (layer_depth // 2, layer_depth))
        y = net.conv(maps[-1], f"{p}/layer_19_1_Conv2d_{i}_1x1_{mid}", mid)
        y = net.depthwise(y, f"{p}/layer_19_2_Conv2d_{i}_3x3_s2_{depth}_depthwise", 2)
        maps.append(net.conv(y, f"{p}/layer_19_2_Conv2d_{i}_3x3_s2_{depth}", depth))
    boxes, classes = [], []
    for k, m in enumerate(maps):
        anchors = 3 if k == 0 else 6
        for name, per, out in (("BoxEncodingPredictor", 4, boxes),
                               ("ClassPredictor", SSD_CLASSES + 1, classes)):  # fmt: skip
            y = net.depthwise(m, f"BoxPredictor_{k}/{name}_depthwise")
            y = net.conv(y, f"BoxPredictor_{k}/{name}", anchors * per, act=None, bn=False)
            out.append(tf.reshape(y, [tf.shape(y)[0], -1, per]))
    return tf.concat(boxes, 1), tf.concat(classes, 1)


def ssd(net: Net, x):  # type: ignore[no-untyped-def]
    """SSD MobileNetV2 as the Object Detection API's ``ssd_mobilenet_v2`` builds it at
    ``SSD_WIDTH``: ``mobilenet_base`` with ``min_depth`` 16 and ``Conv_1`` scaled
    (``layer_19`` 448 channels), extra layers of a 1x1 and a full 3x3 stride-2 conv whose
    depths follow ``max(int(depth * width), 16)`` (``feature_map_generators``), and a 1x1
    box and class conv per map (``kernel_size: 1``). Returns what ``ssdlite`` returns."""
    tf = net.tf
    p = "FeatureExtractor/MobilenetV2"
    feats = net.mobilenet_v2(x, p, SSD_WIDTH, min_depth=16, finegrain=False)
    maps = [feats["layer_15_expansion"], feats["layer_19"]]
    for i, layer_depth in zip(range(2, 6), (512, 256, 256, 128), strict=True):
        mid, depth = (max(int(d * SSD_WIDTH), 16) for d in (layer_depth // 2, layer_depth))
        y = net.conv(maps[-1], f"{p}/layer_19_1_Conv2d_{i}_1x1_{mid}", mid)
        maps.append(net.conv(y, f"{p}/layer_19_2_Conv2d_{i}_3x3_s2_{depth}", depth, 3, 2))
    boxes, classes = [], []
    for k, m in enumerate(maps):
        anchors = 3 if k == 0 else 6
        for name, per, out in (("BoxEncodingPredictor", 4, boxes),
                               ("ClassPredictor", SSD_CLASSES + 1, classes)):  # fmt: skip
            y = net.conv(m, f"BoxPredictor_{k}/{name}", anchors * per, act=None, bn=False)
            out.append(tf.reshape(y, [tf.shape(y)[0], -1, per]))
    return tf.concat(boxes, 1), tf.concat(classes, 1)


POSTPROCESS = {"max_detections": 10, "nms_score_threshold": 0.3, "nms_iou_threshold": 0.6,
               "y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0}  # fmt: skip


def implements_signature() -> str:
    """The ``experimental_implements`` text the TF2 exporter writes for the custom op."""
    attrs = [
        ("max_detections", "i", POSTPROCESS["max_detections"]),
        ("max_classes_per_detection", "i", 1),
        ("use_regular_nms", "b", "false"),
        ("nms_score_threshold", "f", POSTPROCESS["nms_score_threshold"]),
        ("nms_iou_threshold", "f", POSTPROCESS["nms_iou_threshold"]),
        *((k, "f", POSTPROCESS[k]) for k in ("y_scale", "x_scale", "h_scale", "w_scale")),
        ("num_classes", "i", SSD_CLASSES),
    ]
    text = " ".join(f'attr {{ key: "{k}" value {{ {t}: {v} }} }}' for k, t, v in attrs)
    return f'name: "TFLite_Detection_PostProcess" {text}'


def ssdlite_module(tf, net: Net, model=ssdlite):  # type: ignore[no-untyped-def]
    """A ``tf.Module`` whose ``detect`` (``model``: ``ssdlite`` or ``ssd``) ends in the
    post-processing op, as exported."""
    sizes = [SSD_SIZE // 16, SSD_SIZE // 32]
    for _ in range(4):
        sizes.append(-(-sizes[-1] // 2))
    anchors = ssd_anchors(sizes)

    @tf.function(experimental_implements=implements_signature())
    def postprocess(box_encodings, class_predictions, anchors):  # type: ignore[no-untyped-def]
        zero = tf.constant(0.0)
        return zero, zero, zero, zero

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, SSD_SIZE, SSD_SIZE, 3], tf.float32)])
        def detect(self, image):  # type: ignore[no-untyped-def]
            boxes, logits = model(net, image)
            with tf.name_scope("raw_outputs"):
                boxes = tf.identity(boxes, name="box_encodings")
                scores = tf.identity(tf.sigmoid(logits), name="class_predictions")
            const = tf.identity(tf.constant(anchors, name="anchors"), name="anchors")
            return postprocess(boxes, scores, const)[::-1]

    return Detector(), anchors


def convert(tf, module, function, data: np.ndarray | None) -> bytes:  # type: ignore[no-untyped-def]
    """TF Lite bytes of ``function``: float (``data`` None) or post-training int8."""
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], module
    )
    converter.allow_custom_ops = True
    if data is None:
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in data)
    return converter.convert()


def convert_float16(tf, module, function) -> bytes:  # type: ignore[no-untyped-def]
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], module
    )
    converter.allow_custom_ops = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


# -- DeepLab ---------------------------------------------------------------------------------
def deeplab(net: Net, x, classes: int, width: float, output_stride: int):  # type: ignore[no-untyped-def]
    """TF DeepLab's MobileNetV2 model without ASPP: logits ``[1, H, W, classes]``."""
    tf = net.tf
    feats = net.mobilenet_v2(x, "MobilenetV2", width, output_stride, conv_1=False)["layer_18"]
    size = tf.shape(feats)[1:3]
    pooled = tf.reduce_mean(feats, axis=[1, 2], keepdims=True)
    pooled = net.conv(pooled, "image_pooling", 256, act="relu", eps=1e-5)
    pooled = tf.compat.v1.image.resize_bilinear(pooled, size, align_corners=True)
    branch = net.conv(feats, "aspp0", 256, act="relu", eps=1e-5)
    y = net.conv(tf.concat([pooled, branch], 3), "concat_projection", 256, act="relu", eps=1e-5)
    y = net.conv(y, "logits/semantic", classes, act=None, bn=False)
    return tf.compat.v1.image.resize_bilinear(y, tf.shape(x)[1:3], align_corners=True)


def deeplab_module(tf, net: Net, classes: int, width: float, os_: int, size: int):  # type: ignore[no-untyped-def]
    class Segmenter(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
        def segment(self, image):  # type: ignore[no-untyped-def]
            return deeplab(net, image, classes, width, os_)

    return Segmenter()


# -- TF-slim classifier fine-tuned with a dense head ----------------------------------------
#: (classes, width, input size) of ``slim_dense_*.tflite``
SLIM_DENSE = (37, 0.35, 96)


def slim_dense(net: Net, x):  # type: ignore[no-untyped-def]
    """A TF-slim MobileNetV2 (``MobilenetV2/...``, ``Conv_1`` 1280 below width 1 as TF-slim's
    classifiers) whose 1001-class 1x1 logits conv was replaced, for a fine-tune, by a dense
    layer without a background class: global mean, ``Logits/MatMul`` + bias. Logits
    ``[1, classes]``."""
    tf = net.tf
    classes, width, _ = SLIM_DENSE
    with tf.name_scope("MobilenetV2"):
        feats = net.mobilenet_v2(x, "MobilenetV2", width)["layer_19"]
    pooled = tf.reduce_mean(feats, axis=[1, 2])
    channels = int(feats.shape[-1])
    if "Logits/MatMul/weights" not in net.v:
        w = net.rng.standard_normal((channels, classes)) * np.sqrt(1.0 / channels)
        net.v["Logits/MatMul/weights"] = w.astype(np.float32)
        net.v["Logits/MatMul/biases"] = net.rng.normal(0, 0.1, classes).astype(np.float32)
    with tf.name_scope("Logits"):
        y = tf.matmul(pooled, net.v["Logits/MatMul/weights"], name="MatMul")
        return tf.nn.bias_add(y, net.v["Logits/MatMul/biases"], name="BiasAdd")


def slim_dense_files(tf, out: Path) -> None:  # type: ignore[no-untyped-def]
    """``slim_dense_{float16,int8}.tflite``: ``slim_dense`` at ``SLIM_DENSE``'s size."""
    size = SLIM_DENSE[2]
    net = Net(tf, seed=27)
    net.calibrating = True
    slim_dense(net, tf.constant(calibration_data(size)))
    net.calibrating = False

    class Classifier(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32)])
        def classify(self, image):  # type: ignore[no-untyped-def]
            return slim_dense(net, image)

    module = Classifier()
    (out / "slim_dense_float16.tflite").write_bytes(convert_float16(tf, module, module.classify))
    data = calibration_data(size)
    (out / "slim_dense_int8.tflite").write_bytes(convert(tf, module, module.classify, data))


def detectors(tf, out: Path, name: str, model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """``{name}_float16.tflite`` and ``{name}_int8.tflite`` of ``model`` (``ssdlite``,
    ``ssd``)."""
    net = Net(tf, seed=seed)
    net.calibrating = True
    model(net, tf.constant(calibration_data(SSD_SIZE)))
    net.calibrating = False
    module, anchors = ssdlite_module(tf, net, model)
    (out / f"{name}_float16.tflite").write_bytes(convert_float16(tf, module, module.detect))
    data = calibration_data(SSD_SIZE)
    (out / f"{name}_int8.tflite").write_bytes(convert(tf, module, module.detect, data))
    print(name, "anchors", anchors.shape)


def main(out: Path, only: list[str]) -> None:
    """Write the files of the groups in ``only`` (``ssdlite``, ``ssd``, ``ssdlite_od``,
    ``deeplab``, ``slim_dense``; all when empty)."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    if not only or "ssdlite" in only:
        detectors(tf, out, "ssdlite", ssdlite, 21)
    if not only or "ssd" in only:
        detectors(tf, out, "ssd_mobilenet_v2", ssd, 23)
    if not only or "slim_dense" in only:
        slim_dense_files(tf, out)
    if not only or "ssdlite_od" in only:
        detectors(tf, out, "ssdlite_od", lambda net, x: ssdlite(net, x, od_api_width=True), 25)
    for name, classes, width, os_, size, kinds in DEEPLABS if not only or "deeplab" in only else ():
        net = Net(tf, seed=len(name))
        net.calibrating = True
        deeplab(net, tf.constant(calibration_data(size)), classes, width, os_)
        net.calibrating = False
        module = deeplab_module(tf, net, classes, width, os_, size)
        for kind in kinds:
            path = out / f"{name}_{kind}.tflite"
            if kind == "float16":
                path.write_bytes(convert_float16(tf, module, module.segment))
            else:
                path.write_bytes(convert(tf, module, module.segment, calibration_data(size)))
    for path in sorted(out.glob("*.tflite")):
        print(path.name, path.stat().st_size)


if __name__ == "__main__":
    main(
        Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "tflite_heads"),
        sys.argv[2:],
    )
