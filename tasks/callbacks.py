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
    """One short line per validation during ``fit``, and the last validation's metrics as a
    table when ``fit`` ends, titled with the epoch and step of that validation (the numbers
    in the name of the checkpoint saved after it, ``epoch=E-step=S.ckpt``).

    Args:
        line: print the one-line summary after every validation.
    """

    def __init__(self, line: bool = True) -> None:
        self.line = line
        self._at: tuple[int, int] | None = None
        self._metrics: dict[str, float] = {}

    @staticmethod
    def _val_metrics(trainer: Trainer) -> dict[str, float]:
        return {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith("val/") and isinstance(v, torch.Tensor) and v.numel() == 1
        }

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._at = (trainer.current_epoch, trainer.global_step)
        self._metrics = self._val_metrics(trainer)
        shown = [k for k in trainer.progress_bar_metrics if k.startswith("val/")]
        shown = [k for k in shown if k in self._metrics] or sorted(self._metrics)[:4]
        if self.line and shown:
            values = "  ".join(f"{k} {self._metrics[k]:.4f}" for k in shown)
            rank_zero_info(f"epoch={self._at[0]} step={self._at[1]}: {values}")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._metrics and self._at is not None:
            title = f"Validation at epoch={self._at[0]} step={self._at[1]}"
            rank_zero_info("\n" + format_metrics(title, self._metrics))


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


class LearningRateLog(Callback):
    """Log the learning rate of the first parameter group as ``train/lr`` every step
    (works without a logger too, unlike ``LearningRateMonitor``)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=1)
