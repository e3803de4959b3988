"""Shared fixtures: a private cache folder and seeded randomness for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# ddp_spawn hands the model to its workers through shared memory; the default
# file-descriptor sharing fails on some kernels ("unable to resize file ... Invalid
# argument"), named shared-memory files work everywhere.
torch.multiprocessing.set_sharing_strategy("file_system")


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generated data and hub downloads never touch the user's folders."""
    monkeypatch.setenv("MOBILEZOO_CACHE", str(tmp_path_factory.getbasetemp() / "mobilezoo_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _outside_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own temporary folder, so the relative paths the configs
    write to (``outputs/``, ``lightning_logs/``) never land in the checkout."""
    monkeypatch.chdir(tmp_path)


_ROOT = Path(__file__).resolve().parents[1]
_WRITTEN_BY_TOOLS = ("outputs", "lightning_logs", "predictions", "exports")
_before: set[str] = set()


def pytest_sessionstart(session: pytest.Session) -> None:
    _before.update(n for n in _WRITTEN_BY_TOOLS if (_ROOT / n).exists())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test wrote one of the tools' output folders into the checkout."""
    new = [n for n in _WRITTEN_BY_TOOLS if (_ROOT / n).exists() and n not in _before]
    if new:
        session.config.get_terminal_writer().line(
            f"tests wrote {new} into the checkout {_ROOT}; write under tmp_path", red=True
        )
        session.exitstatus = 1
