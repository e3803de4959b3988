"""File names of exports: after the model and the run, so that exporting ``last.ckpt`` of
two runs (or of a detector and a classifier) gives two files instead of one ``last.onnx``
that silently replaces the other."""

from __future__ import annotations

from pathlib import Path

from tasks.run_dirs import checkpoint_run_dir

#: the builder each model kind comes from
KIND_BUILDERS = {
    "classifier": "mobilenet_v2_classifier",
    "detector": "ssdlite_mobilenet_v2",
    "segmenter": "deeplabv3_mobilenet_v2",
    "joint": "ssdlite_deeplabv3_mobilenet_v2",
}


def default_stem(source: str | Path, kind: str) -> str:
    """The file stem of an export of ``source`` (a checkpoint path or a builder name).

    ``outputs/detection_demo/lightning_logs/version_0/checkpoints/last.ckpt`` gives
    ``ssdlite_mobilenet_v2-detection_demo-version_0-last``; a checkpoint outside a
    Lightning run gives ``<builder>-<folder>-<stem>``; a builder name is kept as it is.
    """
    if not str(source).endswith(".ckpt"):
        return str(source)
    ckpt = Path(source).expanduser().absolute()
    run = checkpoint_run_dir(ckpt)
    parts = [KIND_BUILDERS.get(kind, kind)]
    if run.parent.name == "lightning_logs":
        parts.append(run.parent.parent.name)
    parts += [run.name, ckpt.stem]
    return "-".join(p.replace("=", "") for p in parts if p)
