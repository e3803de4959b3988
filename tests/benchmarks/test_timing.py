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


def test_cpu_busy_reads_proc_stat(monkeypatch) -> None:
    from benchmarks import throughput

    busy = throughput.cpu_busy(0.05)
    assert busy is None or 0.0 <= busy <= 1.0
    samples = iter(["cpu 100 0 100 800 0 0 0 0\n", "cpu 150 0 150 900 0 0 0 0\n"])

    class Stat:
        def __enter__(self):
            return self

        def __exit__(self, *args: object) -> None:
            pass

        def readline(self) -> str:
            return next(samples)

    monkeypatch.setattr("builtins.open", lambda *a, **k: Stat())
    assert throughput.cpu_busy(0.0) == 0.5  # 100 of 200 jiffies busy

    def missing(*a: object, **k: object) -> None:
        raise FileNotFoundError("/proc/stat")

    monkeypatch.setattr("builtins.open", missing)
    assert throughput.cpu_busy(0.0) is None
