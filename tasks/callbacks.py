"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import math
from typing import Any

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
    """Stop with a clear message when training produces NaN or infinity.

    Checked at every step: the loss and the BatchNorm running statistics before the
    backward pass (the forward pass has just updated the statistics; they are put back to
    their values before the step), the gradients before the optimizer step, and the weights
    after it. Up to the optimizer step, the model (and any checkpoint saved on the way out)
    keeps the last finite state; a non-finite update is caught right after the step, and
    ``tasks.ModelCheckpoint`` refuses to write such a state. Under DDP every process stops
    at the same step when the loss or the statistics of any one of them are not finite.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        self._buffers = {
            name: b.detach().clone()
            for name, b in pl_module.named_buffers()
            if b.is_floating_point()
        }

    def _stop(self, trainer: Trainer, pl_module: LightningModule, what: str, restore: bool) -> None:
        if restore:
            with torch.no_grad():
                for name, buffer in pl_module.named_buffers():
                    if name in self._buffers:
                        buffer.copy_(self._buffers[name])
        kept = (
            "stopped before the update, so the weights and checkpoints hold the last finite step"
            if restore
            else "the update made the weights non-finite; no checkpoint is written from them"
        )
        raise FloatingPointError(
            f"{what} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"{kept}. Lower the learning rate or check the data."
        )

    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        value = float(loss.detach())
        what = None
        if not math.isfinite(value):
            what = f"training loss became {value}"
        elif (bad := _non_finite(pl_module.named_buffers())) is not None:
            what = f"buffer {bad} became non-finite"
        # Every process decides together (each reaches this point once a step). One that
        # stopped alone would leave the others waiting in the gradient all-reduce, and its
        # checkpoint on the way out (a collective) would meet theirs out of step. The
        # gradients and weights checked below are the same on every process.
        if trainer.strategy.reduce_boolean_decision(what is not None, all=False):
            what = what or "training loss or a buffer became non-finite in another process"
            self._stop(trainer, pl_module, what, restore=True)

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:  # fmt: skip
        grads = ((n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None)
        bad = _non_finite(grads)
        if bad:
            self._stop(trainer, pl_module, f"gradient of {bad} became non-finite", restore=True)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:  # fmt: skip
        bad = _non_finite(pl_module.named_parameters())
        if bad:
            self._stop(trainer, pl_module, f"parameter {bad} became non-finite", restore=False)


def _non_finite(named: Any) -> str | None:
    """The first name of ``(name, tensor)`` pairs whose floating tensor is not all finite."""
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


class LearningRateLog(Callback):
    """Log the learning rate of the first parameter group as ``train/lr`` every step
    (works without a logger too, unlike ``LearningRateMonitor``)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            pl_module.log("train/lr", lr, on_step=True, on_epoch=False, batch_size=1)
