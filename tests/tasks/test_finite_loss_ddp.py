"""FiniteLossCheck under DDP: a loss that is NaN on one process stops every process at the
same step, so the checkpoint saved on the way out (a collective that every process must
reach) is written, instead of one process waiting in the gradient all-reduce for another
that has stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tasks._ddp_cli import run_python


@pytest.mark.slow
def test_a_nan_loss_on_one_process_stops_all_of_them_at_that_step(tmp_path: Path) -> None:
    script = Path(__file__).with_name("_nan_on_one_rank.py")
    code, out = run_python([str(script), str(tmp_path / "out")], tmp_path, timeout=300)
    assert code != 0 and "TIMED OUT" not in out, out[-4000:]
    assert "training loss became nan at global step 1" in out, out[-4000:]
    assert "became non-finite in another process" in out, out[-4000:]  # rank 0's words
    assert "Connection closed" not in out and "Timed out" not in out, out[-4000:]
    # Both processes stopped in step 1 and saved together on the way out: the last
    # checkpoint holds the last finite state, that of step 1.
    last = torch.load(tmp_path / "out" / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1
    assert all(t.isfinite().all() for t in last["state_dict"].values() if t.is_floating_point())
