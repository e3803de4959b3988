"""TF variables -> our state dicts: layouts, BatchNorm (present or folded), label spaces,
and whole-file conversion with the architecture read from the file.

Layouts: TF Lite stores conv weights ``OHWI``, depthwise ``1HWC`` and fully connected
``OI``; TF checkpoints and graphs store conv ``HWIO`` and depthwise ``HWCM`` (M = 1).
PyTorch wants ``OIHW`` and ``C1HW``.

BatchNorm: with TF's ``{scope}/BatchNorm/{gamma,beta,moving_mean,moving_variance}`` our
BatchNorm takes them, its variance shifted by ``eps_tf - eps_ours`` so that
``var + eps`` is TF's whatever epsilon our module has (TF-slim / OD API: 1e-3, DeepLab head:
1e-5). With BatchNorm folded into a conv bias (TF Lite files) our BatchNorm becomes the
identity plus that bias: weight 1, mean 0, variance ``1 - eps``.
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from backbones.mobilenetv2 import LAST_CHANNELS
from heads.postprocess import PostprocessOptions
from heads.pretrained import META_KEY, WeightsEntry
from heads.tf_import.families import (
    canonical_variables,
    is_mobilenet_v2,
    unknown_file_message,
)
from heads.tf_import.names import (
    ConvMapping,
    backbone_mappings,
    classifier_mappings,
    deeplab_mappings,
    out_index_array,
    ssdlite_mappings,
)
from heads.weights_loader import OD_MIN_DEPTH, POSTPROCESS_OPTIONS

Layout = Literal["tflite", "tf"]
#: the builder function of a name (``heads.get_model_builder``). Given by the caller: the
#: builders load named weights through ``heads.weights_loader``, which converts with this
#: module, so this module does not import them.
Builders = Callable[[str], Callable[..., nn.Module]]
BUILDERS = (
    "mobilenet_v2_classifier",
    "deeplabv3_mobilenet_v2",
    "ssdlite_mobilenet_v2",
    "ssd_mobilenet_v2",
    "mobilenet_v2",
)
#: the Object Detection API's SSD builders (TF anchors, box coder, post-processing)
SSD_BUILDERS = ("ssdlite_mobilenet_v2", "ssd_mobilenet_v2")

#: residual additions of MobileNetV2 (blocks of stride 1 and equal widths)
_RESIDUAL_ADDS = 10
#: a variable of each model's head (DeepLab, classifier, SSD): what tells the model
_HEAD_VARIABLES = (
    "logits/semantic/weights",
    "MobilenetV2/Logits/Conv2d_1c_1x1/weights",
    "BoxPredictor_0/ClassPredictor/weights",
)
#: TF-slim MobileNetV2 and the Object Detection API train BatchNorm with epsilon 1e-3
TF_SLIM_BN_EPS = 1e-3
#: TF DeepLab's head (image pooling, ASPP, projection) uses 1e-5
TF_DEEPLAB_HEAD_BN_EPS = 1e-5
_DEEPLAB_HEAD = ("image_pooling", "aspp", "concat_projection")
#: TF names that are not weights (optimizer slots, averages, counters)
_IGNORED_SUFFIXES = ("/ExponentialMovingAverage", "/RMSProp", "/RMSProp_1", "/Momentum")
_IGNORED_NAMES = ("global_step",)


def tf_batchnorm_eps(scope: str) -> float:
    """The epsilon TF trained the BatchNorm of ``scope`` with."""
    return TF_DEEPLAB_HEAD_BN_EPS if scope.startswith(_DEEPLAB_HEAD) else TF_SLIM_BN_EPS


def to_torch_layout(array: np.ndarray, kind: str, layout: Layout) -> np.ndarray:
    """A TF weight array in PyTorch's layout: conv ``OIHW``, depthwise ``C1HW``, linear ``OI``.

    Args:
        array: TF Lite (``OHWI`` / ``1HWC`` / ``OI``) or TF (``HWIO`` / ``HWC1``) weights.
        kind: ``"conv"``, ``"depthwise"`` or ``"linear"``.
        layout: ``"tflite"`` or ``"tf"``.
    """
    if layout not in ("tflite", "tf"):
        raise ValueError(f"layout must be 'tflite' or 'tf', got {layout!r}")
    if kind == "depthwise":
        if layout == "tflite":  # 1HWC -> C1HW
            return np.ascontiguousarray(array.transpose(3, 0, 1, 2))
        if array.shape[3] != 1:
            raise ValueError(f"depth multiplier must be 1, got weights of shape {array.shape}")
        return np.ascontiguousarray(array.transpose(2, 3, 0, 1))  # HWC1 -> C1HW
    if kind == "linear":
        if array.ndim == 2:
            return array if layout == "tflite" else np.ascontiguousarray(array.T)
        conv = to_torch_layout(array, "conv", layout)
        return conv.reshape(conv.shape[0], conv.shape[1])
    if kind != "conv":
        raise ValueError(f"kind must be conv, depthwise or linear, got {kind!r}")
    if layout == "tflite":
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2))  # OHWI -> OIHW
    return np.ascontiguousarray(array.transpose(3, 2, 0, 1))  # HWIO -> OIHW


def convert_variables(
    model: nn.Module,
    variables: dict[str, np.ndarray],
    mappings: list[ConvMapping],
    layout: Layout,
) -> tuple[dict[str, Tensor], list[str]]:
    """Our state dict from TF variables.

    Returns:
        ``(state_dict, unused)``: a complete state dict for ``model`` (every tensor set
        exactly once) and the TF variable names that were not used.

    Raises:
        KeyError: a TF variable a mapping needs is missing (named).
        ValueError: a converted shape differs from our parameter's, or a parameter of the
            model is not covered by the mappings.
    """
    own = model.state_dict()
    state: dict[str, Tensor] = {}
    used: set[str] = set()

    def put(key: str, value: np.ndarray, source: str) -> None:
        if key not in own:
            raise ValueError(f"mapping of {source} targets {key}, which the model does not have")
        if key in state:
            raise ValueError(f"{key} is set twice (second time from {source})")
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source} gives {key} shape {tuple(tensor.shape)}, model has {tuple(own[key].shape)}"
            )
        state[key] = tensor

    def take(name: str) -> np.ndarray:
        if name not in variables:
            raise KeyError(f"TF variable {name!r} not found ({len(variables)} variables read)")
        used.add(name)
        return np.asarray(variables[name])

    for m in mappings:
        w_name = f"{m.tf_scope}/{'depthwise_weights' if m.kind == 'depthwise' else 'weights'}"
        weight = to_torch_layout(take(w_name), m.kind, layout)
        index = out_index_array(m)
        if index is not None:
            weight = weight[index]
        put(f"{m.conv}.weight", weight, w_name)
        b_name = f"{m.tf_scope}/biases"
        if m.bn is None:
            bias = take(b_name)
            put(f"{m.conv}.bias", bias[index] if index is not None else bias, b_name)
            continue
        bn = model.get_submodule(m.bn)
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"{m.bn} is not a BatchNorm2d")
        stats = f"{m.tf_scope}/BatchNorm/"
        if stats + "moving_mean" in variables:
            channels = weight.shape[0]
            gamma = take(stats + "gamma") if stats + "gamma" in variables else np.ones(channels)
            beta = take(stats + "beta") if stats + "beta" in variables else np.zeros(channels)
            var = take(stats + "moving_variance") + (tf_batchnorm_eps(m.tf_scope) - bn.eps)
            put(f"{m.bn}.weight", gamma, stats + "gamma")
            put(f"{m.bn}.bias", beta, stats + "beta")
            put(f"{m.bn}.running_mean", take(stats + "moving_mean"), stats + "moving_mean")
            put(f"{m.bn}.running_var", var, stats + "moving_variance")
        elif b_name in variables:
            # Folded: y = conv(x) + b. BN with mean 0, var 1 - eps, weight 1 is the identity.
            bias = take(b_name)
            channels = bias.shape[0]
            put(f"{m.bn}.weight", np.ones(channels), b_name)
            put(f"{m.bn}.bias", bias, b_name)
            put(f"{m.bn}.running_mean", np.zeros(channels), b_name)
            put(f"{m.bn}.running_var", np.full(channels, 1.0 - bn.eps), b_name)
        else:
            raise KeyError(f"neither {stats}moving_mean nor {b_name} found for {m.bn}")
        state[f"{m.bn}.num_batches_tracked"] = own[f"{m.bn}.num_batches_tracked"].clone()
    uncovered = [k for k in own if k not in state]
    if uncovered:
        raise ValueError(
            f"{len(uncovered)} model tensors have no TF variable, e.g. {uncovered[:3]}"
        )
    unused = [
        n
        for n in variables
        if n not in used and n not in _IGNORED_NAMES and not n.endswith(_IGNORED_SUFFIXES)
    ]
    return state, unused


# -- whole files ------------------------------------------------------------------------------
def read_variables(path: str | Path) -> tuple[dict[str, np.ndarray], Layout, dict[str, Any]]:
    """TF variables of a file, their layout, and what the file says about the architecture
    (``output_stride``, ``align_corners`` for TF Lite DeepLab files).

    Args:
        path: a ``.tflite`` file, a frozen graph ``.pb``, or a TF checkpoint (its
            ``.index`` file or its prefix ``.../model.ckpt``).
    """
    path = Path(path)
    if path.suffix == ".tflite":
        from heads.tf_import.tflite import TFLiteFile

        tfl = TFLiteFile(path)
        hints: dict[str, Any] = {}
        from heads.tf_import.detection import postprocess_op, read_detection_export

        op = postprocess_op(tfl)
        if op is not None:  # an SSD detection export: its graph places the layers
            hints["detection"] = read_detection_export(tfl, op)
            return hints["detection"].variables, "tflite", hints
        convs = tfl.convs()
        if not convs:
            raise ValueError(unknown_file_message(str(path), []))
        rate = max(max(c.dilation) for c in convs)
        hints["output_stride"] = 32 // rate
        resizes = tfl.resize_align_corners()
        if resizes:
            hints["align_corners"] = resizes[-1]
        return _tflite_variables(convs, path, tfl.op_names(), tfl), "tflite", hints
    if path.suffix in (".h5", ".keras"):
        from heads.tf_import.keras import read_keras_variables

        return read_keras_variables(path), "tf", {}
    if path.suffix == ".pb":
        from heads.tf_import.graphdef import frozen_graph_hints, read_frozen_graph_variables

        return read_frozen_graph_variables(path), "tf", frozen_graph_hints(path)
    if path.suffix == ".index" or path.with_name(path.name + ".index").is_file():
        from heads.tf_import.checkpoint import read_checkpoint

        return read_checkpoint(path), "tf", {}
    raise ValueError(
        f"{path}: unknown TF file type {path.suffix!r}; expected .tflite, a frozen graph .pb, "
        "a checkpoint (model.ckpt.index or the prefix model.ckpt) or a Keras .h5 / .keras file"
    )


def _tflite_variables(
    convs: list[Any], path: Path, ops: list[str] | None = None, tfl: Any = None
) -> dict[str, np.ndarray]:
    """TF-slim-named variables of a TF Lite file's convolutions: by their names when they
    are TF-slim's and hold a head we know, else by position (``families``: any exporter of
    a MobileNetV2 classifier or backbone; ``segmentation``: a DeepLab, given the parsed
    file ``tfl``; ``ops``: the file's operators, checked for BatchNorm left unfolded)."""
    from heads.tf_import.tflite import conv_layers, slim_variables

    named = slim_variables(convs)
    if named is not None and any(head in named for head in _HEAD_VARIABLES):
        return named
    layers = conv_layers(convs)
    if is_mobilenet_v2(layers):
        ops = ops or []
        if "MUL" in ops or ops.count("ADD") > _RESIDUAL_ADDS:
            # BatchNorm kept as a multiply-add after its conv: reading the convs alone
            # would give silently wrong numbers.
            raise ValueError(
                f"{path}: MobileNetV2 with {ops.count('MUL')} MUL and {ops.count('ADD')} ADD "
                f"operators (its residuals need {_RESIDUAL_ADDS} ADD): BatchNorm is not folded "
                "into the convolutions; re-export it with the TF Lite converter's defaults"
            )
        return canonical_variables(layers, "tflite", str(path))
    from heads.tf_import.segmentation import deeplab_variables, is_deeplab

    if named is None and tfl is not None and is_deeplab(convs):
        return deeplab_variables(tfl, convs)  # op names (TF2's converter): by the graph
    if named is not None:
        return named  # TF-slim names: infer_builder says what is missing
    raise ValueError(unknown_file_message(str(path), [c.name for c in convs]))


def _out_channels(array: np.ndarray, layout: Layout) -> int:
    return int(array.shape[0] if layout == "tflite" else array.shape[-1])


def infer_builder(
    variables: dict[str, np.ndarray], layout: Layout, source: str = "the file"
) -> tuple[str, dict[str, Any]]:
    """The builder and its options (``num_classes``, ``width_mult``, ``divisible_by``,
    ``aspp``) that the TF variables fit (``source`` names the file in errors)."""
    if "logits/semantic/weights" in variables:
        builder = "deeplabv3_mobilenet_v2"
        kwargs: dict[str, Any] = {
            "num_classes": _out_channels(variables["logits/semantic/weights"], layout),
            "aspp": "aspp1/weights" in variables,
        }
        prefix = "MobilenetV2"
    elif "MobilenetV2/Logits/Conv2d_1c_1x1/weights" in variables:
        builder = "mobilenet_v2_classifier"
        classes = _out_channels(variables["MobilenetV2/Logits/Conv2d_1c_1x1/weights"], layout)
        kwargs = {"num_classes": classes - 1 if classes == 1001 else classes}
        prefix = "MobilenetV2"
    elif "BoxPredictor_0/ClassPredictor/weights" in variables:
        # SSDLite's predictors start with a depthwise conv, SSD's are one 1x1 conv
        lite = "BoxPredictor_0/ClassPredictor_depthwise/depthwise_weights" in variables
        builder = "ssdlite_mobilenet_v2" if lite else "ssd_mobilenet_v2"
        anchors = _out_channels(variables["BoxPredictor_0/BoxEncodingPredictor/weights"], layout)
        classes = _out_channels(variables["BoxPredictor_0/ClassPredictor/weights"], layout)
        tf_classes = classes // (anchors // 4)
        kwargs = {"num_classes": 80 if tf_classes == 91 else tf_classes - 1}
        prefix = "FeatureExtractor/MobilenetV2"
        # below width 1 the OD API narrows Conv_1 (ours keeps 1280 channels at any width)
        last = _out_channels(variables[f"{prefix}/Conv_1/weights"], layout)
        if lite and last < LAST_CHANNELS:
            kwargs["od_api_width"] = True
    elif "MobilenetV2/Conv_1/weights" in variables:
        # No head: the backbone (``backbones.mobilenet_v2``, its ``features.*`` keys).
        builder, kwargs, prefix = "mobilenet_v2", {}, "MobilenetV2"
    else:
        raise ValueError(unknown_file_message(source, sorted(variables)))
    od_width = builder == "ssd_mobilenet_v2" or kwargs.get("od_api_width", False)
    min_channels = OD_MIN_DEPTH if od_width else None
    kwargs.update(_infer_width(variables, layout, prefix, min_channels))
    return builder, kwargs


def _infer_width(
    variables: dict[str, np.ndarray], layout: Layout, prefix: str, min_channels: int | None = None
) -> dict[str, Any]:
    """Width and rounding whose channels are TF's (``min_channels``: the builder's, e.g.
    the Object Detection API's 16 for ``ssd_mobilenet_v2``; default the backbone's)."""
    from backbones.mobilenetv2 import MIN_CHANNELS, MobileNetV2

    tf_channels = [
        _out_channels(variables[f"{prefix}/{s}/weights"], layout)
        for s in ["Conv", "expanded_conv/project"]
        + [f"expanded_conv_{i}/project" for i in range(1, 17)]
    ]
    for width in (1.0, 0.5, 0.75, 0.35, 1.3, 1.4):
        for divisible_by in (8, 1):
            net = MobileNetV2(
                width,
                out_features=["layer_18"],
                divisible_by=divisible_by,
                min_channels=min_channels or MIN_CHANNELS,
            )
            ours = [net._info[f"layer_{i}"].channels for i in range(1, 19)]
            if ours == tf_channels:
                return {"width_mult": width, "divisible_by": divisible_by}
    raise ValueError(f"no width multiplier gives TF's channels {tf_channels}")


def file_classes(variables: dict[str, np.ndarray], layout: Layout) -> int | None:
    """Class outputs (with background) of the file's classifier or detector head."""
    logits = variables.get("MobilenetV2/Logits/Conv2d_1c_1x1/weights")
    if logits is not None:
        return _out_channels(logits, layout)
    boxes = variables.get("BoxPredictor_0/BoxEncodingPredictor/weights")
    if boxes is None:
        return None
    anchors = _out_channels(boxes, layout) // 4
    return _out_channels(variables["BoxPredictor_0/ClassPredictor/weights"], layout) // anchors


def build_model(builders: Builders, builder: str, **kwargs: Any) -> nn.Module:
    """Build ``builder`` (a name from ``BUILDERS``) without weights."""
    if builder not in BUILDERS:
        raise ValueError(f"builder must be one of {BUILDERS}, got {builder!r}")
    post = {key: kwargs.pop(key) for key in POSTPROCESS_OPTIONS if key in kwargs}
    if post:  # a detection export's NMS settings: fields of the ``postprocess`` group
        kwargs["postprocess"] = PostprocessOptions(**post)
    return builders(builder)(**kwargs)


def mappings_for(
    builder: str, model: nn.Module, tf_classes: int | None = None
) -> list[ConvMapping]:
    """Mappings of ``builder``'s model (``tf_classes``: the file's class outputs with
    background, TF-slim's 1001 / the Object Detection API's COCO 91 by default)."""
    if builder in SSD_BUILDERS:
        return ssdlite_mappings(model, tf_classes=tf_classes or 91)
    if builder == "mobilenet_v2_classifier":
        return classifier_mappings(model, tf_classes or 1001)
    if builder == "deeplabv3_mobilenet_v2":
        return deeplab_mappings(model)
    if builder == "mobilenet_v2":
        return backbone_mappings(model.features, "features", "MobilenetV2")
    return ssdlite_mappings(model)


def architecture_keys(builder: str) -> tuple[str, ...]:
    """Builder options recorded in a converted file: all that ``builder(weights=file)``
    needs to build exactly the converted model."""
    common = ("num_classes", "width_mult", "divisible_by", "padding")
    if builder == "deeplabv3_mobilenet_v2":
        return (*common, "output_stride", "align_corners", "aspp")
    if builder in SSD_BUILDERS:
        detector = ("anchor_layout", "score_activation", "image_size", "box_scales")
        lite = ("od_api_width",) if builder == "ssdlite_mobilenet_v2" else ()
        return (*common, *detector, *POSTPROCESS_OPTIONS, *lite)
    return common


def convert_file(
    path: str | Path,
    builder: str | None = None,
    strict: bool = True,
    *,
    builders: Builders,
    **overrides: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert a TF file into our model.

    Args:
        path: a ``.tflite`` file (float or 8-bit: dequantized).
        builder: expected builder; by default read from the variable names.
        strict: raise when TF weight variables are left unused.
        builders: the builder function of a name (``heads.get_model_builder``).
        **overrides: builder options that win over what is read from the file (e.g.
            ``output_stride``).

    Returns:
        ``(model, meta)``: the model in eval mode with the converted weights, and the
        metadata (builder, architecture, source) that ``save_converted`` stores.
    """
    variables, layout, hints = read_variables(path)
    found, kwargs = infer_builder(variables, layout, str(path))
    if builder is not None and builder != found:
        raise ValueError(f"{path} holds a {found} model, not a {builder}")
    kwargs["padding"] = "tf"  # TF convolutions pad "SAME"
    if found == "deeplabv3_mobilenet_v2":
        kwargs["output_stride"] = hints.get("output_stride", 16)
        kwargs["align_corners"] = hints.get("align_corners", True)
    detection = hints.get("detection")
    if found in SSD_BUILDERS:
        # the Object Detection API's SSD(Lite): TF's anchors, sigmoid class scores
        kwargs.update(anchor_layout="tf", score_activation="sigmoid")
        if detection is not None:  # a TF Lite export: its decoding and NMS as well
            from heads.tf_import.detection import postprocess_options

            kwargs.update(postprocess_options(detection, str(path)))
            kwargs["image_size"] = detection.input_size[0]
    kwargs.update(overrides)
    model = build_model(builders, found, **kwargs)
    if detection is not None:
        from heads.tf_import.detection import check_anchors

        check_anchors(model, detection, str(path))
    tf_classes = file_classes(variables, layout)
    mappings = mappings_for(found, model, tf_classes)
    state, unused = convert_variables(model, variables, mappings, layout)
    if unused and strict:
        raise ValueError(f"{path}: {len(unused)} TF variables were not used, e.g. {unused[:5]}")
    model.load_state_dict(state)
    model.eval()
    meta = {
        "builder": found,
        "architecture": {k: kwargs[k] for k in architecture_keys(found) if k in kwargs},
        "num_classes": kwargs.get("num_classes"),
        "options": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool))},
        "source": Path(path).name,
        "source_sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
    }
    return model, meta


def save_converted(model: nn.Module, meta: dict[str, Any], output: str | Path) -> Path:
    """Write ``{"state_dict": ..., "mobilezoo": meta}``: loads with ``weights_only=True``,
    as ``weights=<file>`` of the builder and as a plain state dict."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    torch.save({"state_dict": model.state_dict(), META_KEY: meta}, tmp)
    tmp.replace(output)
    return output


def _convert_tar_member(
    entry: WeightsEntry, source: Path, overrides: dict[str, Any], builders: Builders
) -> tuple[nn.Module, dict[str, Any]]:
    """Convert ``entry.member`` (a .tflite or frozen .pb) found inside the tarball."""
    with tarfile.open(source) as tar, tempfile.TemporaryDirectory() as tmp:
        member = next((m for m in tar.getmembers() if Path(m.name).name == entry.member), None)
        if member is None or not member.isfile():
            raise ValueError(f"{source} has no file {entry.member}")
        extracted = tar.extractfile(member)
        assert extracted is not None
        target = Path(tmp) / Path(member.name).name
        target.write_bytes(extracted.read())
        return convert_file(target, entry.builder, builders=builders, **overrides)


def convert_entry(entry: WeightsEntry, source: Path, output: Path, builders: Builders) -> Path:
    """Convert the downloaded source file of a weights entry into ``output`` (``builders``:
    see ``convert_file``)."""
    overrides = {
        k: v for k, v in entry.architecture.items() if k in architecture_keys(entry.builder)
    }
    overrides.update(entry.extra)
    if entry.file_format == "tflite":
        model, meta = convert_file(source, entry.builder, builders=builders, **overrides)
    elif entry.file_format in ("tflite_in_tar", "tf_tar"):
        model, meta = _convert_tar_member(entry, source, overrides, builders)
    else:
        raise ValueError(f"cannot convert {entry.file_format!r} files")
    meta["entry"] = entry.name
    return save_converted(model, meta, output)
