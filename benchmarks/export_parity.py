"""Export parity in the suite: every model kind exported to ONNX and OpenVINO, each file
checked against PyTorch by ``tasks.export`` (the check ``mobilezoo export`` runs).

One row per exported file: the classifier, the segmenter, and the detector's raw and
end-to-end graphs, each in onnxruntime and in OpenVINO. The models are what a user
exports: each builder as ``mobilezoo export <builder>`` builds it (ImageNet's 1000 classes,
COCO's 80, VOC's 21, at the paper's input sizes), and the trained checkpoints given to the
suite. Not the latency benchmark's randomly initialised networks with re-estimated
BatchNorm: their activations keep unit scale through every layer, and on them fp32
rounding alone (PyTorch fp32 against fp64) already exceeds the 1e-4 parity tolerance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.latency import OPENVINO
from tasks.export import export

HEADER = ["model", "input", "file", "runtime", "max abs difference", "detections (torch / runtime)",
          "parity"]  # fmt: skip

#: (label, builder, builder arguments, input side) of the builders users export
BUILDERS: list[tuple[str, str, dict, int]] = [
    ("mobilenet_v2_classifier", "mobilenet_v2_classifier", {"num_classes": 1000}, 224),
    ("ssdlite_mobilenet_v2", "ssdlite_mobilenet_v2", {"num_classes": 80}, 320),
    ("deeplabv3_mobilenet_v2", "deeplabv3_mobilenet_v2", {"num_classes": 21}, 513),
]


def sources(checkpoints: dict[str, str], quick: bool = False) -> list[tuple[str, object, dict, int | None]]:  # fmt: skip
    """The builders (tiny inputs when ``quick``) and then the checkpoints (kind -> path, at
    the size their model was trained at)."""
    rows: list[tuple[str, object, dict, int | None]] = [
        (label, name, args, 64 if quick else size) for label, name, args, size in BUILDERS
    ]
    for kind, path in checkpoints.items():
        rows.append((f"{kind} checkpoint {Path(path).name}", path, {}, None))
    return rows


def parity_rows(
    models: list[tuple[str, object, dict, int | None]], num_check_images: int = 2
) -> list[list[str]]:
    """Export each ``(label, source, builder_args, image_size)`` (fp32, ONNX and OpenVINO)
    and return one row per parity report. A failed check is a FAIL row, not an exception,
    so the suite still reports it."""
    rows: list[list[str]] = []
    for label, source, builder_args, size in models:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = export(
                    source, tmp, name="model", image_size=size, builder_args=builder_args or None,
                    format="openvino" if OPENVINO else "onnx",
                    num_check_images=num_check_images, printer=None,
                )  # fmt: skip
            except RuntimeError as err:  # a failed check: the message holds the reports
                rows.append([label, str(size or "-"), "-", "-", "-", "-", f"FAIL: {err}"])
                continue
        for report in result.parity:
            diffs = ", ".join(f"{k} {v:.1e}" for k, v in report.max_abs_diff.items())
            dets = "-" if report.detections is None else "{} / {}".format(*report.detections)
            if report.tie_swaps:
                dets += f" ({report.tie_swaps} equal-score ties)"
            rows.append([label, str(size or "default"), report.file.name, report.runtime, diffs,
                         dets, "PASS" if report.passed else "FAIL"])  # fmt: skip
    return rows
