"""A process of a multi-process run died or stopped answering: say so in one line.

Under DDP every process waits for the others at each collective operation (the gradient
all-reduce, metric gathering, checkpoint barriers). When one of them is killed (out of
memory, a node lost, ``kill -9``), the others fail at their next collective: at once when
the connection closes (gloo: "Connection closed by peer"), or after the process group's
timeout when the peer is alive but stuck (gloo: "Timed out waiting 30000ms ...", NCCL's
watchdog). torch then prints a deep traceback from inside gloo or NCCL, which does not say
that the cause is another process. ``peer_failure`` recognises these errors so that the
CLI prints one line, stops the ranks this process launched (a hung one would otherwise
outlive the run, holding its memory) and exits 1, and so that ``tasks.ModelCheckpoint`` does
not try to save on the way out (saving is itself a collective and would wait for the lost
process).

The timeout is ``DDPStrategy(timeout=...)`` (Lightning's default is 30 minutes); on the
command line ``--trainer.strategy=DDPStrategy --trainer.strategy.timeout=0:05:00``.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import torch.distributed as dist

#: gloo's and NCCL's words for a connection to another process that broke
_DIED = re.compile(
    r"Connection (closed|reset) by peer|Broken pipe|Socket closed|NCCL communicator was aborted"
    r"|remote process exited|ProcessGroupNCCL is aborted|Connection refused",
    re.IGNORECASE,
)
#: ... and for a collective that the other processes never joined (gloo also says
#: "Application timeout caused pair closure")
_TIMED_OUT = re.compile(r"timed out|timeout", re.IGNORECASE)
#: where the message comes from: the collective libraries themselves
_COLLECTIVE = re.compile(r"gloo|nccl|c10d|ProcessGroup", re.IGNORECASE)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*(gloo|nccl|pytorch)[^\]]*\]\s*", "", text, flags=re.I)  # source path
    return text.split(". This is typically caused")[0][:200]


def _raised_in_dist(err: BaseException) -> bool:
    """Whether ``err`` was raised in ``torch.distributed`` (a collective's ``wait()``)."""
    tb = err.__traceback__
    while tb is not None:
        if f"torch{os.sep}distributed{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err``, or an exception it comes from, is a collective operation that failed
    because another process of the run died or did not answer in time."""
    return _cause(err) is not None


def _cause(err: BaseException) -> tuple[str, BaseException] | None:
    for e in _chain(err):
        text = str(e)
        collective = isinstance(e, dist.DistError) or (
            isinstance(e, RuntimeError) and (_COLLECTIVE.search(text) or _raised_in_dist(e))
        )
        if not collective:
            continue
        if _DIED.search(text):
            return "died", e
        if _TIMED_OUT.search(text):
            return "timed out", e
    return None


def peer_failure(err: BaseException) -> str | None:
    """One line saying that another process of the run died or stopped answering, with
    this process's rank and the library's own words; ``None`` when ``err`` is not that."""
    found = _cause(err)
    if found is None:
        return None
    kind, cause = found
    where = ""
    if dist.is_available() and dist.is_initialized():
        where = f"rank {dist.get_rank()} of {dist.get_world_size()}: "
    if kind == "died":
        what = "another process of this multi-process run died"
        why = "its own output says why; none: it was killed, e.g. out of memory"
    else:
        what = "another process of this multi-process run did not answer within the timeout"
        why = "set the timeout: --trainer.strategy=DDPStrategy --trainer.strategy.timeout=H:MM:SS"
    return f"{where}{what} ({_first_line(cause)}); stopping this one too ({why})"


def stop_children() -> None:
    """SIGKILL this process's children: the ranks Lightning's launcher started from it (and
    its data loader workers). Linux only (read from ``/proc``); elsewhere nothing is done."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            if ppid == me:
                os.kill(int(stat.parent.name), signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile, or not ours to signal
