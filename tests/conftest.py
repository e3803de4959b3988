"""Shared fixtures: a private cache folder and seeded randomness for every test."""

from __future__ import annotations

import os

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
