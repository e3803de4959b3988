"""``mobilezoo weights`` (the table of named weights) and ``mobilezoo convert`` (a local TF
file into a weights file for the builders and the tasks' ``weights`` option).

Plain argparse over the model side (``heads.pretrained``, ``heads.tf_import``): no
Lightning; ``tasks.cli.command`` hands these two commands over before LightningCLI starts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heads.pretrained import WeightsEntry, list_weights


def checked_summary(entry: WeightsEntry) -> str:
    """One-line summary of ``entry.checked`` for tables."""
    if entry.file_format == "torchvision":
        return "torchvision's file"
    if entry.file_format == "tflite_in_tar":
        return "reader and mapping checked on the 8-bit sibling"
    if entry.file_format == "tflite":
        if "8bit" in entry.name:
            return "agrees with the 8-bit TF Lite runtime (test)"
        return "equals the TF Lite runtime (test)"
    if entry.builder == "ssdlite_mobilenet_v2":
        return "names, shapes, box/class order, TF-ops outputs (tests); real file not run"
    return "mapping checked on TF Lite files; real frozen graph not run"


def weights_table(builder: str | None = None) -> str:
    """A markdown table of the entries (of one builder, or all)."""
    header = ("builder", "weights=", "input", "range", "padding", "classes", "published", "checked")
    rows = [header, tuple("---" for _ in header)]
    for e in list_weights(builder):
        low, high = e.value_range
        rows.append(
            (
                e.builder,
                e.name,
                f"{e.input_size[0]}x{e.input_size[1]}",
                "ImageNet mean/std" if isinstance(e.mean, tuple) else f"[{low:.3g}, {high:.3g}]",
                e.padding,
                str(e.num_classes),
                e.metric,
                checked_summary(e),
            )
        )
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def weights_main(args: Sequence[str]) -> None:
    """``mobilezoo weights [--builder NAME] [--details]``."""
    parser = argparse.ArgumentParser(
        prog="mobilezoo weights", description="List the named weights of every builder."
    )
    parser.add_argument("--builder", choices=sorted({e.builder for e in list_weights()}))
    parser.add_argument(
        "--details", action="store_true", help="also print URL, checksum and sources"
    )
    options = parser.parse_args(list(args))
    print(weights_table(options.builder))
    if options.details:
        for e in list_weights(options.builder):
            print(
                f"\n{e.builder}(weights={e.name!r})\n  url: {e.url}\n  sha256: {e.sha256 or '-'}"
                f"\n  metric: {e.metric} ({e.metric_source})\n  checked: {e.checked}"
                f"\n  cache: {e.cache_path}"
            )


def convert_main(args: Sequence[str]) -> None:
    """``mobilezoo convert FILE --output model.pt [--builder B] [--output_stride N]``."""
    parser = argparse.ArgumentParser(
        prog="mobilezoo convert",
        description="Convert a TensorFlow Lite file (float or 8-bit), frozen graph or "
        "checkpoint of MobileNetV2, Mobile DeepLabv3 or SSDLite into a weights file: use it as weights=<file> of the builder "
        "or as model.init_args.weights of a training/evaluation config.",
    )
    parser.add_argument(
        "file", help="a .tflite file, a frozen graph .pb or a checkpoint (model.ckpt.index)"
    )
    parser.add_argument("--output", required=True, help="where to write the .pt file")
    parser.add_argument(
        "--builder",
        choices=(
            "mobilenet_v2_classifier",
            "deeplabv3_mobilenet_v2",
            "ssdlite_mobilenet_v2",
            "ssd_mobilenet_v2",
            "mobilenet_v2",
        ),
        help="expected model (default: read from the file's tensor names)",
    )
    parser.add_argument(
        "--output_stride", type=int, choices=(8, 16, 32), help="DeepLab: override the file's"
    )
    parser.add_argument(
        "--check",
        action="append",
        default=[],
        metavar="PHOTO",
        help="TF Lite files: compare the conversion with the TF Lite runtime on this photo "
        "(repeatable; needs ai-edge-litert)",
    )
    options = parser.parse_args(list(args))
    from heads import get_model_builder
    from heads.tf_import.convert import convert_file, save_converted

    overrides = {}
    if options.output_stride is not None:
        overrides["output_stride"] = options.output_stride
    try:
        model, meta = convert_file(
            options.file, options.builder, builders=get_model_builder, **overrides
        )
    except (ValueError, KeyError, FileNotFoundError, NotImplementedError, ImportError) as err:
        parser.exit(2, f"mobilezoo convert: error: {err}\n")
    checks = _check_lines(options.file, model, meta["builder"], options.check)
    if isinstance(checks, str):
        parser.exit(2, f"mobilezoo convert: error: {checks}\n")
    path = save_converted(model, meta, options.output)
    arch = ", ".join(f"{k}={v!r}" for k, v in meta["architecture"].items())
    # the OD API's width rule below width 1 (min 16 channels, layer_19 narrowed): a backbone
    # that only its own detector builds
    backbone = getattr(model, "backbone", None)
    od_narrowed = backbone is not None and backbone.scale_last_conv and backbone.width_mult < 1
    shared = (
        " (its backbone has the Object Detection API's narrowed widths: no other builder's)"
        if od_narrowed
        else f", or weights_backbone={str(path)!r} of any builder"
    )
    print(
        f"wrote {path}: {meta['builder']}({arch}) from {meta['source']}\n"
        f"use: {meta['builder']}(weights={str(path)!r}) (builds exactly this model), "
        f"model.init_args.weights: {path}{shared}"
    )
    for line in checks:
        print(line)


def _check_lines(file: str, model: Any, builder: str, photos: Sequence[str]) -> list[str] | str:
    """``--check`` lines, or the one-line reason they cannot be made."""
    if not photos:
        return []
    if Path(file).suffix != ".tflite":
        return f"--check compares with the TF Lite runtime: {file} is not a .tflite file"
    try:
        from heads.tf_import.verify import check_photo

        return [
            check_photo(Path(file), model, builder, Path(p)).line(Path(file), Path(p))
            for p in photos
        ]
    except ImportError as err:
        return f"--check needs the TF Lite runtime: pip install ai-edge-litert ({err})"
    except (OSError, ValueError) as err:
        return f"--check: {err}"
