"""Interleaved timing: round-robin calls, a quiet pause before each timed call, not timed."""

from __future__ import annotations

import time

from benchmarks.timing import interleaved_medians


def test_round_robin_with_untimed_settle_pause() -> None:
    calls: list[str] = []
    candidates = {name: (lambda n=name: calls.append(n)) for name in ("a", "b")}
    start = time.perf_counter()
    medians = interleaved_medians(candidates, warmup=1, repeats=3, settle_s=0.05)
    elapsed = time.perf_counter() - start
    assert calls == ["a", "b"] + ["a", "b"] * 3  # warm-ups, then one call each per round
    assert elapsed >= 6 * 0.05  # a pause before every timed call...
    assert set(medians) == {"a", "b"} and max(medians.values()) < 20  # ...outside the timing
