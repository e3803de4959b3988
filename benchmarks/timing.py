"""Latency measurement shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def median_ms(fn: Callable[[], object], warmup: int = 3, repeats: int = 20) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def settle_batchnorm(model: nn.Module, size: int) -> nn.Module:
    """Give BatchNorm realistic statistics (one training-mode batch of ``[2, 3, size, size]``
    noise) and return the model in eval mode: a fresh network's activations shrink layer
    by layer and would time denormal arithmetic, not the model."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        (model.forward_raw if hasattr(model, "forward_raw") else model)(
            torch.randn(2, 3, size, size)
        )
    return model.eval()


#: pause before each timed call of ``interleaved_medians``: after a call, PyTorch's OpenMP
#: threads (and a runtime's own pool) spin-wait for a few milliseconds and would take the
#: cores from whatever runs next, so a path timed right after PyTorch looked slower than
#: the same path timed after a runtime (onnxruntime's end-to-end detector came out faster
#: than its raw network)
SETTLE_S = 0.02


def interleaved_medians(
    candidates: dict[str, Callable[[], object]], warmup: int, repeats: int,
    settle_s: float = SETTLE_S,
) -> dict[str, float]:  # fmt: skip
    """Median milliseconds per candidate, calling the candidates in turn ``repeats`` times.

    Round-robin, so a change in the load of a shared machine hits every candidate alike
    and their ratios stay meaningful; each timed call starts after ``settle_s`` seconds of
    quiet, so no candidate pays for the threads of the one before it.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            time.sleep(settle_s)
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def fmt(value: float | None, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals; ``-`` for a missing or NaN value."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub Markdown table; floats with 2 decimals."""

    def cell(v: object) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def met(value: float, target: float, at_most: bool = True) -> str:
    """``"met"`` when ``value`` is at most (``at_most``) or at least ``target``, else
    ``"missed"``: the verdict column of the tables."""
    ok = value <= target if at_most else value >= target
    return "met" if ok else "missed"
