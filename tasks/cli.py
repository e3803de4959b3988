"""The ``mobilezoo`` command: LightningCLI with fit, validate, test and predict, plus
``mobilezoo export`` (ONNX, parity check, int8; see ``tasks.export``) and ``mobilezoo plot``
(the curves of a finished run; see ``tasks.plots``)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import tasks  # noqa: F401  (registers the zoo's tasks and data modules by short name)
from tasks.base import BaseTask
from tasks.callbacks import FiniteLossCheck, LearningRateLog, MetricsSummary
from tasks.cli_session import (
    add_session_arguments,
    after_instantiate,
    mobilezoo_parser_kwargs,
    parse_with_short_errors,
)
from tasks.data.summary import DataSummary
from tasks.figures import EvaluationFigures


class MobileZooCLI(LightningCLI):
    """LightningCLI over the zoo's tasks (``model:``) and data modules (``data:``)."""

    def __init__(self, *args, parser_kwargs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # program name, help text, no abbreviated keys (see tasks.cli_session)
        kwargs["parser_kwargs"] = parser_kwargs or mobilezoo_parser_kwargs(self.subcommands())
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_lightning_class_args(MetricsSummary, "metrics_summary")
        parser.add_lightning_class_args(FiniteLossCheck, "finite_loss_check")
        parser.add_lightning_class_args(LearningRateLog, "lr_log")
        parser.add_lightning_class_args(EvaluationFigures, "evaluation_figures")
        parser.add_lightning_class_args(DataSummary, "data_summary")
        add_session_arguments(parser)

    def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
        # misspelled keys: one line naming the closest valid key; predict without input
        # images stops here, before any checkpoint is read
        parse_with_short_errors(self, parser, args, super().parse_arguments)

    def after_instantiate_classes(self) -> None:
        # validate/test/predict of a checkpoint write next to its run; --draw_threshold
        after_instantiate(self)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mobilezoo`` console script."""
    try:
        _run(args)
    except SIGTERMException:
        # Lightning stops cleanly on SIGTERM (checkpoint callbacks with save_on_exception
        # save first) but exits 0; job schedulers expect 128 + SIGTERM.
        raise SystemExit(143) from None


def export_main(args: list[str]) -> None:
    """``mobilezoo export SOURCE [--output_dir DIR] [--int8 true] [--data ...]``.

    The options are the arguments of ``tasks.export.export`` (typed, so jsonargparse checks
    them); ``--data`` takes a data module like the training config's ``data:`` section.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from tasks.export import export

    parser = ArgumentParser(
        prog="mobilezoo export",
        description="Export a checkpoint or a builder to ONNX, check it in onnxruntime, "
        "optionally quantize it to int8.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML with these options")
    parser.add_function_arguments(export, as_group=False, skip={"printer"})
    if args and not args[0].startswith("-"):
        args = ["--source", *args]  # the source may be given positionally
    config = parser.parse_args(args)
    # jsonargparse 4.49 renamed instantiate_classes (deprecated) to instantiate
    init = getattr(parser, "instantiate", parser.instantiate_classes)(config)
    options = {k: v for k, v in init.items() if k != "config"}
    try:
        export(**options)
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as err:
        parser.exit(2, f"mobilezoo export: error: {err}\n")


def _run(args: list[str] | None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["export"]:
        export_main(argv[1:])
        return
    if argv[:1] == ["plot"]:
        from tasks.plots import plot_main

        plot_main(argv[1:])
        return
    MobileZooCLI(
        BaseTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
    )


if __name__ == "__main__":
    main()
