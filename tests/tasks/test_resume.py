"""An interrupted and resumed run ends exactly where an uninterrupted one does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.data.demo.classification import make_classification_demo

SCRIPT = Path(__file__).with_name("_resume_run.py")


def _run(*args: str, expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    if expect_ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    root = tmp_path_factory.mktemp("resume")
    make_classification_demo(root / "data", 2, 7, 2, 40, seed=3)  # 14 images -> 7 steps/epoch
    _run(str(root / "data"), str(root / "uninterrupted"))
    return root, torch.load(root / "uninterrupted" / "final.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "kill_at"), [("TERM", 3), ("KILL", 5)])
def test_resume_after_signal_equals_uninterrupted(reference, sig: str, kill_at: int) -> None:
    root, expected = reference
    out = root / f"killed_{sig}"
    killed = _run(
        str(root / "data"), str(out), "--kill-at", str(kill_at), "--signal", sig, expect_ok=False
    )
    assert not (out / "final.pt").exists(), killed.stdout[-2000:]
    last = out / "last.ckpt"
    assert last.is_file()
    # SIGTERM saves at the step it arrived; SIGKILL leaves the last periodic checkpoint.
    assert torch.load(last, weights_only=True)["global_step"] == (kill_at if sig == "TERM" else 4)
    _run(str(root / "data"), str(out), "--resume", str(last))
    resumed = torch.load(out / "final.pt", weights_only=True)
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)


def test_a_checkpoint_from_an_epochs_end_skips_nothing_of_the_next_epoch() -> None:
    """Saved at the validation that ends an epoch, a checkpoint holds the next epoch's
    number with the finished epoch's batch count; Lightning runs that epoch whole."""
    from tasks.data.resumable import ResumableSampler

    sampler = ResumableSampler(list(range(64)), batch_size=16, drop_last=True)
    sampler.set_epoch(2)
    sampler.resume(epoch=2, batches_done=4)  # all 4 batches of an epoch
    assert len(list(sampler)) == 64
    sampler.resume(epoch=2, batches_done=3)  # mid-epoch: the last batch only
    assert [i for i, _ in sampler] == [i for i, _ in list(sampler)[-16:]]
    sampler.resume(epoch=2, batches_done=3)
    assert len(list(sampler)) == 16
