"""The GPU section's code paths (AMP + channels-last training, folded AMP inference, the
timing) run on the CPU too, so a machine with CUDA does not find their bugs first."""

from __future__ import annotations

import torch

from benchmarks.gpu import device_rows, gpu_section
from benchmarks.latency import build_pairs, complexity


def test_rows_on_the_cpu_with_bf16_autocast() -> None:
    pairs = build_pairs(quick=True)
    for pair in pairs[:3]:
        pair.complexity = complexity(pair)
    train_rows, infer_rows = device_rows(pairs, quick=True, device=torch.device("cpu"))
    assert [row[0] for row in train_rows] == [pairs[1].name, pairs[2].name]
    assert len(infer_rows) == 4  # two models, batches 1 and 2 in quick mode
    for row in train_rows:
        assert float(row[3]) > 0 and float(row[5]) > 0  # img/s of ours and the peer
    for row in infer_rows:
        assert float(row[2]) > 0 and float(row[4]) > 0  # ms of ours and the peer
    assert not pairs[1].model.training  # the pair's own model is left in eval mode


def test_section_says_when_no_gpu_ran(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "GPU section was not run" in gpu_section([], quick=True)
