"""``python -m benchmarks.training`` prints the suite's training-throughput table alone."""

from __future__ import annotations

import pytest
from torchvision.models import mobilenet_v2 as torchvision_mobilenet_v2

from benchmarks import latency, training
from heads import mobilenet_v2_classifier


def test_main_prints_the_training_table(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    pair = latency.Pair(
        name="ours",
        kind="classifier",
        model=mobilenet_v2_classifier(num_classes=1000, width_mult=0.35).eval(),
        peer_name="peer",
        peer=torchvision_mobilenet_v2(width_mult=0.35).eval(),
        size=32,
        paper=(0.0, 0.0),
    )
    monkeypatch.setattr(latency, "build_pairs", lambda quick: [pair])
    monkeypatch.setattr(latency, "complexity", lambda p: {"madds": 2.0, "peer_madds": 1.0})
    training.main(["--quick", "--steps", "1", "--threads", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ours")]
    assert len(rows) == 1  # a classifier has no channels-last row
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1:3] == ["32", "2"]  # input side, batch of the quick run
    ours, peer, ratio, per_madd = float(cells[3]), float(cells[5]), float(cells[6]), cells[7]
    assert ours > 0 and peer > 0 and ratio == pytest.approx(ours / peer, abs=0.01)
    assert float(per_madd.removesuffix("x")) == pytest.approx(ours * 2.0 / peer, rel=0.02)
