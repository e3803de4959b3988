"""What the ``mobilezoo`` command adds around LightningCLI: its help text, short errors,
early checks, run folders of evaluations, and the ``--draw_threshold`` option of predict."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from tasks.checkpoints.run_dirs import checkpoint_run_dir, evaluation_dir
from tasks.cli.errors import short_error

DESCRIPTION = (
    "mobilezoo: MobileNetV2 with SSDLite detection, Mobile DeepLabv3 segmentation and a "
    "classifier, trained and evaluated from the YAML configs in configs/ "
    "(e.g. `mobilezoo fit -c configs/detection_demo_ssdlite_mobilenetv2.yaml`)."
)

#: commands handled outside LightningCLI, listed by ``mobilezoo --help``
EXTRA_COMMANDS = {
    "export": "ONNX or OpenVINO export of a checkpoint or builder, parity check, int8 (see "
    "`mobilezoo export --help`)",
    "plot": "draw the curves of a finished run as PNG files (`mobilezoo plot RUN_DIR`)",
    "configs": "list the shipped recipes, which `-c <name>` runs, or copy one "
    "(`mobilezoo configs copy NAME [DEST]`)",
    "weights": "list the named trained weights (`weights=` entries)",
    "convert": "convert a TF Lite / frozen graph / TF checkpoint file to a state dict "
    "(`mobilezoo convert FILE --output model.pt`)",
}


def mobilezoo_parser_kwargs(subcommands: dict[str, Any]) -> dict[str, Any]:
    """Parser settings of LightningCLI: program name, help text, and no abbreviated keys
    (``--trainer.max_epoch`` is an error, not ``max_epochs``)."""
    others = "; ".join(f"{name}: {text}" for name, text in EXTRA_COMMANDS.items())
    main = {
        "prog": "mobilezoo",
        "description": DESCRIPTION,
        "epilog": f"Other commands -- {others}.",
        "allow_abbrev": False,
    }
    return {**main, **{name: {"allow_abbrev": False} for name in subcommands}}


def add_session_arguments(parser: Any) -> None:
    """Options of every subcommand that are not a class argument."""
    parser.add_argument(
        "--draw_threshold",
        type=float | None,
        default=None,
        help="predict: smallest detection score drawn on the images (overrides the "
        "DetectionPredictionWriter's draw_threshold; all detections go to the JSON)",
    )


def _valid_keys(parser: Any, argv: list[str], subcommand: str | None) -> list[str]:
    try:
        config = parser.parse_args(argv)
    except (ArgumentError, SystemExit):
        return []
    prefix = f"{subcommand}." if subcommand else ""
    return [k[len(prefix) :] for k in config.keys() if k.startswith(prefix)]  # noqa: SIM118


def _parsers(cli: Any, parser: Any) -> list[Any]:
    return [parser, *getattr(cli, "_subcommand_parsers", {}).values()]


def parse_with_short_errors(
    cli: Any, parser: Any, args: Any, parse: Callable[[Any, Any], None]
) -> None:
    """Run LightningCLI's ``parse(parser, args)``; on a parse error print one or two lines
    (the bad key and the closest valid one) and exit 2, instead of the usage dump."""
    argv = sys.argv[1:] if args is None else list(args)
    if isinstance(args, dict):
        return parse(parser, args)
    subcommand = argv[0] if argv and argv[0] in cli.subcommands() else None
    prog = f"mobilezoo {subcommand}" if subcommand else "mobilezoo"
    parsers = _parsers(cli, parser)
    for p in parsers:
        p.exit_on_error = False
    try:
        parse(parser, args)
        if subcommand == "predict":
            _check_predict_input(cli.config["predict"])
    except ArgumentError as err:
        text = short_error(prog, str(err), argv, lambda a: _valid_keys(parser, a, subcommand))
        if subcommand is None:  # no or an unknown command: name the ones outside LightningCLI too
            text += f"\nalso: {', '.join(f'mobilezoo {c}' for c in EXTRA_COMMANDS)}"
        sys.stderr.write(text + "\n")
        raise SystemExit(2) from None
    finally:
        for p in parsers:
            p.exit_on_error = True
    return None


def parse_or_exit(parser: Any, argv: list[str], prog: str) -> Any:
    """``parser.parse_args(argv)`` of a plain jsonargparse parser (``mobilezoo export``),
    with the short errors of the training commands: a misspelled key gets the closest valid
    one, a bad value one line naming the option. Exits 2 on an error."""
    parser.exit_on_error = False
    try:
        return parser.parse_args(argv)
    except ArgumentError as err:
        text = short_error(prog, str(err), argv, lambda a: _valid_keys(parser, a, None))
        sys.stderr.write(text + "\n")
        raise SystemExit(2) from None
    finally:
        parser.exit_on_error = True


def _check_predict_input(config: Any) -> None:
    data = config.get("data")
    init = data.get("init_args") if data is not None and hasattr(data, "get") else None
    if init is not None and "predict_dir" in init and init.get("predict_dir") is None:
        raise ArgumentError(
            None,
            "predict needs input images: pass --data.init_args.predict_dir FOLDER "
            "(every image in it is predicted, subfolders included)",
        )


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (made if missing); tried, not guessed from
    permissions, which a read-only mount or a root user make misleading."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def after_instantiate(cli: Any) -> None:
    """Point the logger of validate/test/predict of a checkpoint into its run folder (under
    the config's ``default_root_dir`` when that folder is read-only), and
    hand ``--draw_threshold`` to the detection writer."""
    subcommand = cli.subcommand
    if subcommand is None:
        return
    config = cli.config[subcommand]
    threshold = config.get("draw_threshold")
    if threshold is not None:
        from tasks.writers.predictions import DetectionPredictionWriter

        for callback in cli.trainer.callbacks:
            if isinstance(callback, DetectionPredictionWriter):
                callback.draw_threshold = float(threshold)
    for tb in cli.trainer.loggers:
        if isinstance(tb, TensorBoardLogger):
            tb._default_hp_metric = False  # no "hp_metric = -1" placeholder curve
    ckpt_path = config.get("ckpt_path")
    logger = config.get("trainer", {}).get("logger")
    if subcommand == "fit" or not ckpt_path or logger not in (None, True):
        return  # fit, no checkpoint, or a logger the user chose: leave it
    if ckpt_path in ("hpc", "registry"):
        return  # resolved by Lightning later ("last" and "best" are files by now)
    target = evaluation_dir(ckpt_path, subcommand)
    if not _writable(target):
        # a read-only model store: the same layout under the config's root instead
        run = checkpoint_run_dir(ckpt_path)
        target = Path(cli.trainer.default_root_dir) / run.name / subcommand / Path(ckpt_path).stem
        rank_zero_info(f"{subcommand}: cannot write next to {ckpt_path}")
    cli.trainer.loggers = [
        TensorBoardLogger(
            save_dir=str(target.parent.parent),
            name=target.parent.name,
            version=target.name,
            default_hp_metric=False,
        )
    ]
    cli.trainer._default_root_dir = str(target)
    for callback in cli.trainer.checkpoint_callbacks:
        if getattr(callback, "dirpath", "set") is None:
            # the folder the checkpoint was saved in, so restoring the callback's state does
            # not warn that "the dirpath has changed"; nothing is saved outside fit
            callback.dirpath = os.path.realpath(os.path.dirname(os.path.abspath(ckpt_path)))
    rank_zero_info(f"{subcommand} of {ckpt_path}: writing to {target}")
