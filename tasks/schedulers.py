"""Learning-rate schedules stepped per optimizer step, with linear warm-up.

``total_steps=None`` means "the whole run": the task fills it in from
``trainer.estimated_stepping_batches`` before the first step, so a YAML config need not
repeat the number of epochs.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class _WarmupSchedule(LRScheduler):
    """Base: factor(step) * base_lr with a linear warm-up from ``warmup_factor``."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, last_epoch)

    def decay(self, progress: float) -> float:
        """Factor at ``progress`` in [0, 1] of the steps after warm-up."""
        raise NotImplementedError

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            return self.warmup_factor * (1 - alpha) + alpha
        if self.total_steps is None:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        return self.decay(min(1.0, (step - self.warmup_steps) / span))

    def get_lr(self) -> list[float]:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]


class WarmupCosineLR(_WarmupSchedule):
    """Cosine decay to ``min_factor * base_lr`` after a linear warm-up (torchvision's SSDLite)."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        min_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.min_factor = min_factor
        super().__init__(optimizer, total_steps, warmup_steps, warmup_factor, last_epoch)

    def decay(self, progress: float) -> float:
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupPolyLR(_WarmupSchedule):
    """Polynomial decay ``(1 - progress) ** power`` (DeepLab's "poly", power 0.9)."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        power: float = 0.9,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        self.power = power
        super().__init__(optimizer, total_steps, warmup_steps, warmup_factor, last_epoch)

    def decay(self, progress: float) -> float:
        return (1 - progress) ** self.power


class WarmupExponentialLR(_WarmupSchedule):
    """``gamma ** (step / steps_per_decay)``: the paper's ImageNet decay of 0.98 per epoch.

    ``steps_per_decay=None`` means one epoch (filled in by the task).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        gamma: float = 0.98,
        steps_per_decay: int | None = None,
        warmup_steps: int = 0,
        warmup_factor: float = 0.001,
        last_epoch: int = -1,
    ) -> None:
        self.gamma = gamma
        self.steps_per_decay = steps_per_decay
        super().__init__(optimizer, None, warmup_steps, warmup_factor, last_epoch)

    def factor(self, step: int) -> float:
        warm = super().factor(step) if step < self.warmup_steps else 1.0
        return warm * self.gamma ** (step / (self.steps_per_decay or 1e12))
