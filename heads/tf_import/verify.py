"""Compare a converted TF Lite model with the TF Lite runtime on one photo.

``compare_with_runtime`` / ``check_photo`` give a ``Comparison`` (same top-1, largest
output difference, pixel agreement); ``mobilezoo convert --check`` prints its ``line``, and
``python -m benchmarks.tf_runtime`` the table of every shared file. Needs ``ai-edge-litert``
(dev extra) and Pillow, imported when a comparison runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.tf_import.layerwise import debugging_interpreter, quantize


def runtime(model_path: Path):  # type: ignore[no-untyped-def]
    """The TF Lite runtime's interpreter of ``model_path``, tensors allocated, one thread."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


@dataclass
class Comparison:
    """Our converted model against the TF Lite runtime on one photo.

    Attributes:
        output: what was compared: ``"logits"`` (per pixel for segmentation),
            ``"probabilities"`` (the file ends in a softmax) or ``"features"`` (a backbone).
        top1_same: classifier: the same top-1 class; segmentation: every pixel's class the
            same; features: ``None``.
        max_difference: largest absolute difference of the compared outputs (the runtime's
            dequantized where the file is 8-bit); ``nan`` where the runtime gives classes only.
        quantized: the file computes in 8 bits.
        emulated: our activations were rounded as the file's (``emulate``): the numbers
            then test the conversion, not the quantization noise.
        float_top1_same: 8-bit classifiers: the converted float model's own top-1 against
            the runtime's (``None`` otherwise).
        agreement: segmentation: the fraction of pixels of the same class.
        layer_steps, worst_layer: 8-bit detectors and segmenters: the largest difference
            of any of our layers from the runtime's, fed the runtime's own input to it, in
            steps of its 8-bit grid (``layerwise``), and the layer.
    """

    output: str
    top1_same: bool | None
    max_difference: float
    quantized: bool
    emulated: bool = False
    float_top1_same: bool | None = None
    agreement: float | None = None
    layer_steps: float | None = None
    worst_layer: str = ""

    def line(self, model_path: Path, photo: Path) -> str:
        """One line for ``mobilezoo convert --check``."""
        bits = "8-bit" if self.quantized else "float"
        same = "" if self.top1_same is None else f"same top-1: {self.top1_same}, "
        if self.agreement is not None:
            same = f"pixels of the same class: {self.agreement:.2%}, "
        if self.output == "box codes and scores":
            same = f"same detections: {self.top1_same}, "
        how = ", our activations rounded to its 8-bit grid" if self.emulated else ""
        plain = (
            ""
            if self.float_top1_same is None
            else f"; the float conversion alone: same top-1: {self.float_top1_same}"
        )
        diff = (
            "the runtime gives classes only"
            if np.isnan(self.max_difference)
            else f"max {self.output} difference {self.max_difference:.2e}"
        )
        layers = (
            ""
            if self.layer_steps is None
            else f"; layer by layer on the runtime's own inputs: within {self.layer_steps:.2f} "
            f"of its 8-bit step (worst: {self.worst_layer})"
        )
        return (
            f"{model_path.name} ({bits}) vs TF Lite runtime on {photo.name}: "
            f"{same}{diff}{how}{plain}{layers}"
        )


def compare_with_runtime(
    model_path: Path, model: nn.Module, builder: str, image: np.ndarray
) -> Comparison:
    """Run ``model`` (converted from ``model_path``) and the TF Lite runtime on ``image``.

    Args:
        model_path: the ``.tflite`` file.
        model: its conversion, in eval mode.
        builder: the builder it was converted for.
        image: uint8 RGB ``[H, W, 3]`` at the file's input size.

    Both get the same input: ``x / 127.5 - 1`` (MobileNetV2's range); for an 8-bit input
    the runtime gets it quantized and our model the dequantized values. For an 8-bit
    MobileNetV2 classifier or backbone our activations are rounded as the file's
    (``emulate.int8_activations``), and the float model's top-1 is reported beside. Needs
    ``ai-edge-litert``.
    """
    from heads.tf_import.convert import SSD_BUILDERS
    from heads.tf_import.emulate import GRAPH_PAIRED

    if builder in SSD_BUILDERS:
        return _with_layers(
            compare_detections(model_path, model, image, builder),
            model_path, model, builder, image,
        )  # fmt: skip
    # a detector's or segmenter's roundings are emulated as the built-in kernels round
    # (``rounding``); XNNPACK's differ, and a random 8-bit model amplifies the difference
    interpreter = (
        debugging_interpreter(model_path) if builder in GRAPH_PAIRED else runtime(model_path)
    )
    detail = interpreter.get_input_details()[0]
    x = image.astype(np.float32) / 127.5 - 1.0
    quantized = detail["dtype"] != np.float32
    if quantized:
        fed = quantize(x, detail)
        scale, zero_point = detail["quantization"]
        x = ((fed.astype(np.float32) - zero_point) * scale).astype(np.float32)
    else:
        fed = x
    interpreter.set_tensor(detail["index"], fed[None])
    interpreter.invoke()
    out_detail = interpreter.get_output_details()[0]
    ref = interpreter.get_tensor(out_detail["index"])[0]
    if ref.dtype != np.float32 and out_detail["quantization"][0]:
        scale, zero_point = out_detail["quantization"]
        ref = (ref.astype(np.float32) - zero_point) * scale
    quantized = quantized or any(
        t["dtype"] in (np.int8, np.uint8) for t in interpreter.get_tensor_details()
    )
    tensor = torch.from_numpy(x).permute(2, 0, 1)[None]
    with torch.no_grad():
        plain = model(tensor)
        out, emulated = _emulated(model, builder, model_path, tensor)
        out = plain if out is None else out
    if builder == "mobilenet_v2":
        ours = out["layer_19"][0].permute(1, 2, 0).numpy()
        return Comparison("features", None, float(np.abs(ours - ref).max()), quantized, emulated)
    if builder == "mobilenet_v2_classifier":
        ref = ref.reshape(-1).astype(np.float32)
        if ref.size == out.shape[1] + 1:  # the file's background class, dropped by us
            ref = ref[1:]
        from heads.tf_import.tflite import TFLiteFile

        softmax = TFLiteFile(model_path).op_names()[-1] == "SOFTMAX"
        ours = (out[0].softmax(0) if softmax else out[0]).numpy()
        top1 = int(ours.argmax()) == int(ref.argmax())
        kind = "probabilities" if softmax else "logits"
        plain_top1 = int(plain[0].argmax()) == int(ref.argmax()) if quantized else None
        diff = float(np.abs(ours - ref).max())
        return Comparison(kind, top1, diff, quantized, emulated, plain_top1)
    if builder == "deeplabv3_mobilenet_v2":
        ours = out[0].permute(1, 2, 0).numpy()
        if ref.ndim == 3:
            diff = float(np.abs(ours - ref).max())
            ref = ref.argmax(-1)
        else:
            diff = float("nan")
        agreement = float((ours.argmax(-1) == ref).mean())
        result = Comparison(
            "logits", agreement == 1.0, diff, quantized, emulated, agreement=agreement
        )
        return _with_layers(result, model_path, model, builder, image)
    raise ValueError(f"comparing {builder} with the TF Lite runtime is not supported")


def _emulated(model: nn.Module, builder: str, model_path: Path, tensor: torch.Tensor):  # type: ignore[no-untyped-def]
    """``model``'s output on ``tensor`` with the 8-bit file's roundings (``emulate``) and
    whether there were any (``(None, False)`` if not). Detectors and segmenters run as
    ``emulate.exact_copy`` (float64, the file's exact weights)."""
    from heads.tf_import.convert import SSD_BUILDERS
    from heads.tf_import.emulate import GRAPH_PAIRED, exact_copy, int8_activations

    if builder in GRAPH_PAIRED:
        model, tensor = exact_copy(model, model_path, builder), tensor.double()
    with int8_activations(model, builder, model_path) as emulated:
        if not emulated:
            return None, False
        if builder in SSD_BUILDERS:
            raw = model.forward_raw(tensor)
            return (raw, model.postprocess_raw(raw, tensor.shape[-2:])[0]), True
        return model(tensor).float(), True


def _inputs(image: np.ndarray, detail: dict) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """``(fed to the runtime, fed to us)``: ``x / 127.5 - 1``, quantized for an 8-bit input."""
    x = image.astype(np.float32) / 127.5 - 1.0
    if detail["dtype"] == np.float32:
        return x, x
    fed = quantize(x, detail)
    scale, zero_point = detail["quantization"]
    return fed, ((fed.astype(np.float32) - zero_point) * scale).astype(np.float32)


def compare_detections(
    model_path: Path,
    model: nn.Module,
    image: np.ndarray,
    builder: str = "ssdlite_mobilenet_v2",
) -> Comparison:
    """An SSD detection export (``TFLite_Detection_PostProcess``) against its runtime:
    the network's box codes and class scores against the tensors the runtime feeds the
    post-processing op, and the detections (the same labels in the same order, boxes
    within 1e-3 of the input size). ``image``: uint8 ``[H, W, 3]`` at the input size;
    ``builder``: the one the file converted to (``ssdlite_mobilenet_v2`` or
    ``ssd_mobilenet_v2``)."""
    from heads.tf_import.convert import read_variables
    from heads.tf_import.emulate import score_rounding

    tensors = read_variables(model_path)[2]["detection"].tensors
    interpreter = debugging_interpreter(model_path)  # reading the op's inputs is the point
    detail = interpreter.get_input_details()[0]
    fed, x = _inputs(image, detail)
    interpreter.set_tensor(detail["index"], fed[None])
    interpreter.invoke()
    ref = {k: interpreter.get_tensor(i)[0] for k, i in tensors.items()}
    quantized = any(t["dtype"] in (np.int8, np.uint8) for t in interpreter.get_tensor_details())
    tensor = torch.from_numpy(x).permute(2, 0, 1)[None]
    with torch.no_grad():
        emulation, emulated = _emulated(model, builder, model_path, tensor)
        if emulation is None:
            raw = model.forward_raw(tensor)
            detections = model.postprocess_raw(raw, tensor.shape[-2:])[0]
        else:
            raw, detections = emulation
    codes = raw.box_deltas[0].float().numpy()[:, [1, 0, 3, 2]]  # TF's (ty, tx, th, tw)
    logits = raw.cls_logits[0]
    sigmoid = model.postprocessor.score_activation == "sigmoid"
    scores = logits.sigmoid() if sigmoid else logits.softmax(-1)
    if emulated:
        scores = score_rounding(model_path)(scores)
    scores = scores.float().numpy()
    detections = {k: v.float() if v.is_floating_point() else v for k, v in detections.items()}
    diff = max(
        float(np.abs(codes - ref["box_encodings"]).max()),
        float(np.abs(scores - ref["class_predictions"]).max()),
    )
    count = int(ref["num_detections"])
    height, width = image.shape[:2]
    theirs = np.clip(ref["boxes"][:count][:, [1, 0, 3, 2]], 0.0, 1.0) * np.array(
        [width, height] * 2
    )
    same = len(detections["scores"]) == count and (
        detections["labels"].tolist() == ref["classes"][:count].astype(int).tolist()
        and bool(np.all(np.abs(detections["boxes"].numpy() - theirs) <= 1e-3 * max(height, width)))
    )
    return Comparison("box codes and scores", same, diff, quantized, emulated)


def _with_layers(
    result: Comparison, model_path: Path, model: nn.Module, builder: str, image: np.ndarray
) -> Comparison:
    """``result`` with the layer-by-layer comparison added, for an 8-bit file."""
    if not result.quantized:
        return result
    from heads.tf_import.convert import file_classes, mappings_for, read_variables
    from heads.tf_import.layerwise import compare_layers

    variables, layout, _ = read_variables(model_path)
    mappings = mappings_for(builder, model, file_classes(variables, layout))
    x = image.astype(np.float32) / 127.5 - 1.0
    worst = max(compare_layers(model_path, model, mappings, x), key=lambda e: e.steps)
    result.layer_steps, result.worst_layer = worst.steps, worst.scope
    return result


def check_photo(model_path: Path, model: nn.Module, builder: str, photo: Path) -> Comparison:
    """``compare_with_runtime`` on ``photo`` resized (bilinear) to the file's input size."""
    interpreter = runtime(model_path)
    shape = interpreter.get_input_details()[0]["shape"]
    image = photo_array(photo, int(shape[1]), int(shape[2]))
    return compare_with_runtime(model_path, model, builder, image)


def photo_array(path: Path, height: int, width: int) -> np.ndarray:
    """The photo at ``path`` as uint8 RGB ``[height, width, 3]`` (bilinear resize)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB").resize((width, height), Image.BILINEAR))
