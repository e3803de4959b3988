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
    """Stop training with a clear message when the training loss is NaN or infinite."""

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not math.isfinite(float(loss.detach())):
            raise FloatingPointError(
                f"training loss became {float(loss)} at global step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {batch_idx}); lower the learning rate "
                "or check the data. The last saved checkpoint is from before this step."
            )
