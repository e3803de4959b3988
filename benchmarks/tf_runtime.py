"""Converted TF Lite and Keras files against the TF Lite runtime (and Keras' own outputs)
on photos: a table.

    python -m benchmarks.tf_runtime ../shared/tf-weights

Needs ``ai-edge-litert`` (dev extra) and Pillow. For every ``.tflite`` file of the folder
that converts, and every photo in ``photos/``: the largest logit difference (float files),
the per-pixel argmax agreement (segmentation) or top-1 agreement (classification); the
classifier also with PyTorch's symmetric padding, to show what ``padding="tf"`` buys. A
folder with ``keras_outputs.npz`` (the generated files of every family) gets
``verify_files``' table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from heads import get_model_builder
from heads.tf_import.convert import convert_file
from heads.tf_import.verify import check_photo, photo_array, runtime


def verify(folder: Path) -> list[str]:
    """Rows of the comparison table (markdown)."""
    rows = ["| file | photo | check | value |", "| --- | --- | --- | --- |"]
    photos = sorted(p for p in (folder / "photos").iterdir() if "mask" not in p.name)
    for model_path in sorted(folder.glob("*.tflite")):
        model, meta = convert_file(model_path, builders=get_model_builder)
        interpreter = runtime(model_path)
        detail = interpreter.get_input_details()[0]
        size = int(detail["shape"][1])
        quantized = detail["dtype"] == np.uint8
        for photo in photos:
            image = photo_array(photo, size, size)
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
                x = photo_array(photo, size, size).astype(np.float32) / 127.5 - 1.0
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
    """``python -m benchmarks.tf_runtime [FOLDER]``: the real TF files' table (default
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
