"""Recognising a collective operation that failed because another process died or hung."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from tasks import ModelCheckpoint
from tasks.peer_failure import is_peer_failure, peer_failure

GLOO_CLOSED = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed "
    "by peer [127.0.0.1]:946. This is typically caused by a remote worker crashing. Check the "
    "logs of the remote worker before reporting an error. GLHF!"
)
GLOO_TIMEOUT = (
    "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out "
    "waiting 5000ms for recv operation to complete"
)


def test_a_closed_connection_is_a_peer_that_died() -> None:
    line = peer_failure(RuntimeError(GLOO_CLOSED))
    assert line == (
        "another process of this multi-process run died (Connection closed by peer "
        "[127.0.0.1]:946); stopping this one too (its own output says why; none: it was "
        "killed, e.g. out of memory)"
    )


def test_a_timeout_names_the_option_that_sets_it() -> None:
    line = peer_failure(RuntimeError(GLOO_TIMEOUT))
    assert line is not None and "did not answer within the timeout" in line
    assert "Timed out waiting 5000ms for recv operation to complete" in line
    assert "--trainer.strategy.timeout=" in line
    # gloo's other word for it, raised in a collective's wait() without naming gloo
    wait = compile("raise RuntimeError('Application timeout caused pair closure')",
                   str(Path(dist.__file__).parent / "distributed_c10d.py"), "exec")  # fmt: skip
    with pytest.raises(RuntimeError) as raised:
        exec(wait)
    assert "did not answer" in (peer_failure(raised.value) or "")
    assert peer_failure(RuntimeError("Application timeout caused pair closure")) is None
    nccl = dist.DistBackendError("Watchdog caught collective operation timeout: WorkNCCL(...)")
    assert "did not answer" in (peer_failure(nccl) or "")


def test_found_under_the_error_of_a_hook_that_ran_on_the_way_out() -> None:
    # Lightning calls on_exception hooks while handling the first error; one that fails
    # (a collective of its own, say) raises the error that reaches the CLI.
    err = ValueError("a hook failed")
    err.__context__ = RuntimeError(GLOO_CLOSED)
    assert is_peer_failure(err)
    assert "died (Connection closed by peer" in (peer_failure(err) or "")


@pytest.mark.parametrize(
    "err",
    [
        RuntimeError("CUDA out of memory"),
        RuntimeError("Connection closed by peer"),  # not from a collective library
        ValueError(GLOO_CLOSED),  # not what torch raises
        FloatingPointError("training loss became nan"),
    ],
)
def test_other_errors_are_not_peer_failures(err: BaseException) -> None:
    assert peer_failure(err) is None


def test_checkpoint_skips_its_save_on_exception_when_a_peer_is_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved: list[str] = []
    callback = ModelCheckpoint()
    monkeypatch.setattr(callback, "_save_checkpoint", lambda trainer, path: saved.append(path))
    with pytest.warns(UserWarning, match="no checkpoint on exit"):
        callback.on_exception(None, None, RuntimeError(GLOO_CLOSED))  # type: ignore[arg-type]
    assert saved == []
