"""The ``mobilezoo`` command: LightningCLI with fit, validate, test and predict."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import SIGTERMException

import tasks  # noqa: F401  (registers the zoo's tasks and data modules by short name)
from tasks.base import BaseTask
from tasks.callbacks import FiniteLossCheck, MetricsSummary


class MobileZooCLI(LightningCLI):
    """LightningCLI over the zoo's tasks (``model:``) and data modules (``data:``)."""

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_lightning_class_args(MetricsSummary, "metrics_summary")
        parser.add_lightning_class_args(FiniteLossCheck, "finite_loss_check")


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mobilezoo`` console script."""
    try:
        _run(args)
    except SIGTERMException:
        # Lightning stops cleanly on SIGTERM (checkpoint callbacks with save_on_exception
        # save first) but exits 0; job schedulers expect 128 + SIGTERM.
        raise SystemExit(143) from None


def _run(args: list[str] | None) -> None:
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
