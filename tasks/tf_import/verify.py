"""Compare converted TF Lite models with the TF Lite runtime on photos and print a table.

    python -m tasks.tf_import.verify ../shared/tf-weights

Needs ``ai-edge-litert`` (dev extra) and Pillow. For every ``.tflite`` file of the folder
that converts, and every photo in ``photos/``: the largest logit difference (float files),
the per-pixel argmax agreement (segmentation) or top-1 agreement (classification); the
classifier also with PyTorch's symmetric padding, to show what ``padding="tf"`` buys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from tasks.tf_import.convert import convert_file


def _photo(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))


def _runtime(model_path: Path):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


def verify(folder: Path) -> list[str]:
    """Rows of the comparison table (markdown)."""
    rows = ["| file | photo | check | value |", "| --- | --- | --- | --- |"]
    photos = sorted(p for p in (folder / "photos").iterdir() if "mask" not in p.name)
    for model_path in sorted(folder.glob("*.tflite")):
        model, meta = convert_file(model_path)
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
                torch_model = convert_file(model_path, padding="torch")[0]
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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0] if args else "../shared/tf-weights")
    print("\n".join(verify(folder)))


if __name__ == "__main__":
    main()
