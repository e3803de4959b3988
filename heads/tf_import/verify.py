"""Compare converted TF Lite models with the TF Lite runtime on photos and print a table.

    python -m heads.tf_import.verify ../shared/tf-weights

Needs ``ai-edge-litert`` (dev extra) and Pillow. For every ``.tflite`` file of the folder
that converts, and every photo in ``photos/``: the largest logit difference (float files),
the per-pixel argmax agreement (segmentation) or top-1 agreement (classification); the
classifier also with PyTorch's symmetric padding, to show what ``padding="tf"`` buys.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from heads.registry import get_model_builder
from heads.tf_import.convert import convert_file


def _photo(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))


def _runtime(model_path: Path):  # type: ignore[no-untyped-def]
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
    """

    output: str
    top1_same: bool | None
    max_difference: float
    quantized: bool
    emulated: bool = False
    float_top1_same: bool | None = None
    agreement: float | None = None

    def line(self, model_path: Path, photo: Path) -> str:
        """One line for ``mobilezoo convert --check``."""
        bits = "8-bit" if self.quantized else "float"
        same = "" if self.top1_same is None else f"same top-1: {self.top1_same}, "
        if self.agreement is not None:
            same = f"pixels of the same class: {self.agreement:.2%}, "
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
        return f"{model_path.name} ({bits}) vs TF Lite runtime on {photo.name}: {same}{diff}{how}{plain}"


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:  # type: ignore[type-arg]
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.round(x / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


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
    from heads.tf_import.emulate import int8_activations

    interpreter = _runtime(model_path)
    detail = interpreter.get_input_details()[0]
    x = image.astype(np.float32) / 127.5 - 1.0
    quantized = detail["dtype"] != np.float32
    if quantized:
        fed = _quantize(x, detail)
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
        with int8_activations(model, builder, model_path) as emulated:
            out = model(tensor) if emulated else plain
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
        return Comparison("logits", agreement == 1.0, diff, quantized, agreement=agreement)
    raise ValueError(f"comparing {builder} with the TF Lite runtime is not supported")


def check_photo(model_path: Path, model: nn.Module, builder: str, photo: Path) -> Comparison:
    """``compare_with_runtime`` on ``photo`` resized (bilinear) to the file's input size."""
    interpreter = _runtime(model_path)
    shape = interpreter.get_input_details()[0]["shape"]
    image = _photo_hw(photo, int(shape[1]), int(shape[2]))
    return compare_with_runtime(model_path, model, builder, image)


def _photo_hw(path: Path, height: int, width: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB").resize((width, height), Image.BILINEAR))


def verify(folder: Path) -> list[str]:
    """Rows of the comparison table (markdown)."""
    rows = ["| file | photo | check | value |", "| --- | --- | --- | --- |"]
    photos = sorted(p for p in (folder / "photos").iterdir() if "mask" not in p.name)
    for model_path in sorted(folder.glob("*.tflite")):
        model, meta = convert_file(model_path, builders=get_model_builder)
        interpreter = _runtime(model_path)
        detail = interpreter.get_input_details()[0]
        size = int(detail["shape"][1])
        quantized = detail["dtype"] == np.uint8
        for photo in photos:
            image = _photo(photo, size)
            if quantized:
                fed, x = image, (image.astype(np.float32) - 128.0) / 128.0
            else:
                fed = x = image.astype(np.float32) / 127.5 - 1.0
            interpreter.set_tensor(detail["index"], fed[None])
            interpreter.invoke()
            ref = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
            tensor = torch.from_numpy(x).permute(2, 0, 1)[None]
            with torch.no_grad():
                out = model(tensor)[0]
            name = (model_path.name, photo.name)
            if meta["builder"] == "mobilenet_v2_classifier":
                # runtime: uint8 softmax over 1001 classes (scale 1/256); ours: 1000 logits
                probs = ref.astype(np.float64) / 256.0
                torch_model, _ = convert_file(
                    model_path, builders=get_model_builder, padding="torch"
                )
                with torch.no_grad():
                    out_torch = torch_model(tensor)[0]
                cells = []
                for logits in (out, out_torch):
                    p = logits.softmax(0).numpy()  # TF's background class is dropped
                    top1 = int(logits.argmax()) + 1 == int(ref.argmax())
                    cells.append(f"{top1}, {np.abs(p - probs[1:]).max():.3f}")
                rows.append(f"| {name[0]} | {name[1]} | same top-1, max prob. difference "
                            f"(padding tf / torch) | {cells[0]} / {cells[1]} |")  # fmt: skip
                continue
            if ref.ndim == 3:  # float logits [H, W, C]
                ours = out.permute(1, 2, 0).numpy()
                diff = float(np.abs(ours - ref).max())
                rows.append(f"| {name[0]} | {name[1]} | max logit difference | {diff:.2e} |")
                ref = ref.argmax(-1)
            agreement = float((out.argmax(0).numpy() == ref).mean())
            rows.append(f"| {name[0]} | {name[1]} | argmax agreement | {agreement:.4f} |")
    return rows


def verify_files(folder: Path, photos: Path) -> list[str]:
    """Rows of the comparison table of every converted file of ``folder`` (markdown): TF
    Lite files against the runtime, Keras files against ``keras_outputs.npz`` (the outputs
    Keras computed when it wrote them: ``tests/tasks/data/make_keras_fixtures.py``)."""
    rows = [
        "| file | model | photo | same top-1 | max difference |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = sorted(p for p in photos.iterdir() if "mask" not in p.name)
    expected = (
        np.load(folder / "keras_outputs.npz") if (folder / "keras_outputs.npz").is_file() else {}
    )
    for path in sorted(folder.iterdir()):
        if path.suffix not in (".tflite", ".h5", ".keras"):
            continue
        try:
            model, meta = convert_file(path, builders=get_model_builder)
        except ValueError as err:
            rows.append(f"| {path.name} | refused: {str(err)[:60]}... | | | |")
            continue
        builder = meta["builder"]
        for photo in names:
            if path.suffix == ".tflite":
                c = check_photo(path, model, builder, photo)
                how = " (8-bit grid)" if c.emulated else ""
                rows.append(f"| {path.name} | {builder} | {photo.name} | {c.top1_same} "
                            f"| {c.max_difference:.1e} {c.output}{how} |")  # fmt: skip
            elif path.name in expected:
                ref = expected[path.name][PHOTO_ORDER.index(photo.name)]
                size = 96 if ref.ndim == 1 else ref.shape[0] * 32  # the fixtures' input
                x = _photo_hw(photo, size, size).astype(np.float32) / 127.5 - 1.0
                with torch.no_grad():
                    out = model(torch.from_numpy(x).permute(2, 0, 1)[None])
                ours = out["layer_19"].permute(0, 2, 3, 1)[0] if isinstance(out, dict) else out[0]
                same = "" if ref.ndim > 1 else str(int(ours.argmax()) == int(ref.argmax()))
                diff = float(np.abs(ours.numpy() - ref).max())
                rows.append(
                    f"| {path.name} | {builder} | {photo.name} | {same} | {diff:.1e} vs Keras |"
                )
    return rows


#: the photo order of ``keras_outputs.npz``
PHOTO_ORDER = ("grace_hopper.bmp", "cat.bmp", "parrot.jpg", "bird_segmentation.bmp")


def main(argv: list[str] | None = None) -> None:
    """``python -m heads.tf_import.verify [FOLDER]``: the real TF files' table (default
    ``../shared/tf-weights``), or, for a folder with ``keras_outputs.npz`` (the generated
    files of every family), ``verify_files`` on the shared photos."""
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "../shared/tf-weights")
    if (folder / "keras_outputs.npz").is_file():
        print("\n".join(verify_files(folder, Path("../shared/tf-weights/photos"))))
    else:
        print("\n".join(verify(folder)))


if __name__ == "__main__":
    main()
