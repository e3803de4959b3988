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
    """Stop with a clear message when training produces NaN or infinity.

    Checked at every step: the loss and the BatchNorm running statistics before the
    backward pass (the forward pass has just updated the statistics; they are put back to
    their values before the step), the gradients before the optimizer step, and the weights
    after it. Up to the optimizer step, the model (and any checkpoint saved on the way out)
    keeps the last finite state; a non-finite update is caught right after the step, and
    ``tasks.ModelCheckpoint`` refuses to write such a state.
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
        if not math.isfinite(value):
            self._stop(trainer, pl_module, f"training loss became {value}", restore=True)
        bad = _non_finite(pl_module.named_buffers())
        if bad:
            self._stop(trainer, pl_module, f"buffer {bad} became non-finite", restore=True)

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
