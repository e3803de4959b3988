"""Per-step learning-rate schedules and their set-up from the trainer."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.schedulers import WarmupCosineLR, WarmupExponentialLR, WarmupPolyLR


def _lrs(scheduler, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _opt() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_cosine_with_warmup_by_hand() -> None:
    lrs = _lrs(WarmupCosineLR(_opt(), total_steps=12, warmup_steps=2, warmup_factor=0.1), 13)
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[7] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lrs[12] == pytest.approx(0.0, abs=1e-12)


def test_poly_by_hand() -> None:
    lrs = _lrs(WarmupPolyLR(_opt(), total_steps=10, power=0.9), 11)
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5**0.9) and lrs[10] == 0.0


def test_exponential_per_epoch() -> None:
    lrs = _lrs(WarmupExponentialLR(_opt(), gamma=0.5, steps_per_decay=4), 9)
    assert lrs[4] == pytest.approx(0.5) and lrs[8] == pytest.approx(0.25)
    assert lrs[2] == pytest.approx(0.5 ** (2 / 4))
