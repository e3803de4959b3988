"""Helpers of test_ddp_cli: run ``mobilezoo`` as real processes, and a callback that makes
one rank of a DDP run die or hang.

The CLI is run with ``python -m tasks.cli`` in a new session, so that a run that hangs can
be killed with all the processes Lightning's launcher started for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[2]


def run_cli(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """``mobilezoo ARGS`` in a fresh process group (see ``run_python``)."""
    return run_python(["-m", "tasks.cli", *args], cwd, timeout)


def run_python(args: list[str], cwd: Path, timeout: float) -> tuple[int, str]:
    """``python ARGS`` in a fresh process group; ``(exit code of the launching process,
    its output and that of the ranks it started)``.

    Waits until every process of the group has ended, a rank left behind by a launcher
    that died included. Past ``timeout`` all of them are killed and ``"TIMED OUT"`` ends the
    output, so a hang fails the test instead of blocking the suite.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    log = cwd / f"cli_{len(list(cwd.glob('cli_*.log')))}.log"
    deadline = time.monotonic() + timeout
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=cwd, env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            timed_out = _group_alive(proc.pid)
        except subprocess.TimeoutExpired:
            code, timed_out = -9, True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return code, log.read_text() + ("\nTIMED OUT" if timed_out else "")


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


class SignalRankAt(Callback):
    """Send ``signal_name`` to this process when it is rank ``rank`` and has finished
    training step ``step`` (mid-epoch): ``SIGKILL`` is a process that dies without a word
    (out of memory, a lost node), ``SIGSTOP`` one that hangs.

    The signalled process's pid goes to ``<pid_dir>/pid``, the time of the signal
    (``time.time()``) to ``<pid_dir>/signalled``.
    """

    def __init__(self, rank: int = 1, step: int = 2, signal_name: str = "SIGKILL",
                 pid_dir: str = ".") -> None:  # fmt: skip
        self.rank, self.step = rank, step
        self.signal = getattr(signal, signal_name)
        self.pid_dir = Path(pid_dir)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            (self.pid_dir / "pid").write_text(str(os.getpid()))
            (self.pid_dir / "signalled").write_text(str(time.time()))
            os.kill(os.getpid(), self.signal)
