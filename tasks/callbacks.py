"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info


def format_metrics(title: str, metrics: dict[str, float]) -> str:
    """A two-column text table of ``name value`` rows under ``title``."""
    width = max((len(k) for k in metrics), default=10)
    rows = [f"{k:<{width}}  {v:.4f}" for k, v in sorted(metrics.items())]
    rule = "-" * max(len(title), width + 10)
    return "\n".join([title, rule, *rows, rule])


class MetricsSummary(Callback):
    """Print the last validation metrics as a table when ``fit`` ends."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and isinstance(v, torch.Tensor) and v.numel() == 1
        }
        if metrics:
            title = f"Validation after epoch {trainer.current_epoch} ({trainer.global_step} steps)"
            rank_zero_info("\n" + format_metrics(title, metrics))


class FiniteLossCheck(Callback):
    """Stop with a clear message when the training loss is NaN or infinite.

    The check runs before the backward pass, so the weights (and any checkpoint saved on
    the way out) are still those of the last good step.
    """

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training loss became {value} at global step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); stopped before the update, so the weights and "
                "checkpoints hold the last finite step. Lower the learning rate or check the data."
            )
