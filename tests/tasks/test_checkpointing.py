"""tasks.ModelCheckpoint: last.ckpt is the latest state, writes are atomic, and nothing
non-finite is ever written (issue 9, item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tasks import ModelCheckpoint
from tasks.base import BaseTask
from tasks.callbacks import FiniteLossCheck
from tasks.checkpoints.io import CheckpointError, non_finite_tensors

CONFIGS = Path(__file__).parents[2] / "configs"


class _Tiny(BaseTask):
    """A linear model with BatchNorm whose ``val/score`` gets worse at every validation."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(optimizer=lambda p: torch.optim.SGD(p, lr=lr))
        self.model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.model(x).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/score", -float(self.global_step))  # worse every time


def _loader(n: int = 48) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1)), batch_size=4)


def _fit(tmp: Path, steps: int, lr: float = 0.01, callback_cls: type = ModelCheckpoint,
         **ckpt_args) -> tuple[_Tiny, ModelCheckpoint]:  # fmt: skip
    ckpt = callback_cls(tmp, monitor="val/score", mode="max", **ckpt_args)
    trainer = Trainer(
        max_steps=steps, val_check_interval=3, logger=False, enable_progress_bar=False,
        num_sanity_val_steps=0, callbacks=[FiniteLossCheck(), ckpt], enable_model_summary=False,
    )  # fmt: skip
    task = _Tiny(lr)
    trainer.fit(task, _loader(), _loader(8))
    return task, ckpt


def test_last_ckpt_holds_the_final_step_when_the_metric_gets_worse(tmp_path: Path) -> None:
    task, ckpt = _fit(tmp_path, steps=12)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 12  # Lightning 2.6's own callback leaves step 3 here
    for name, value in task.state_dict().items():
        assert torch.equal(saved["state_dict"][name], value), name
    best = torch.load(ckpt.best_model_path, weights_only=True)
    assert best["global_step"] == 3  # the best score, as before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


@pytest.mark.parametrize("callback_cls", [ModelCheckpoint, LightningModelCheckpoint],
                         ids=["tasks", "lightning"])  # fmt: skip
def test_a_huge_learning_rate_stops_with_the_step_and_writes_nothing_non_finite(
    tmp_path: Path, callback_cls: type
) -> None:
    """Lightning's own callback saving on the exception passes the task's backstop too."""
    with pytest.raises((FloatingPointError, CheckpointError), match=r"at global step \d+"):
        _fit(tmp_path, steps=30, lr=1e25, callback_cls=callback_cls, every_n_train_steps=1,
             save_on_exception=True)  # fmt: skip
    files = list(tmp_path.glob("*.ckpt"))
    assert files, "the finite steps before the failure are checkpointed"
    for file in files:  # parameters, BatchNorm buffers and optimizer state alike
        ckpt = torch.load(file, weights_only=True)
        state = [ckpt["state_dict"], ckpt["optimizer_states"]]
        assert non_finite_tensors(state) == [], file.name
    assert non_finite_tensors({"a": [torch.tensor([1.0, float("inf")])]}) == ["a.0"]


_WRITER = r"""
import os, shutil, signal, sys
import torch
sys.path.insert(0, sys.argv[3])
from tests.tasks.test_checkpointing import _fit
mode, out = sys.argv[1], sys.argv[2]
real_copy = shutil.copyfile
calls = {"n": 0}

def dying_copy(src, dst, *a, **kw):  # the cross-filesystem move of a checkpoint
    calls["n"] += 1
    if calls["n"] < 3:
        return real_copy(src, dst, *a, **kw)
    data = open(src, "rb").read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 3])
        f.flush()
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(28, "No space left on device")

shutil.copyfile = dying_copy
if os.environ.get("MOBILEZOO_TEST_FORCE_EXDEV"):
    def cross_device(src, dst, *a, **kw):
        raise OSError(18, "Invalid cross-device link")
    os.rename = cross_device  # shutil.move then copies, as across filesystems
_fit(__import__("pathlib").Path(out), steps=12)
"""


def _tmpfs(path: Path) -> bool:
    """Mount a tmpfs at ``path`` (another filesystem than $TMPDIR) when running as root."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.mark.parametrize("mode", ["kill", "enospc"])
def test_a_write_that_dies_half_way_leaves_the_previous_checkpoint(
    tmp_path: Path, mode: str
) -> None:
    out = tmp_path / "ckpts"
    mounted = _tmpfs(out)
    try:
        env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
        if not mounted:
            # Without a second filesystem, force the cross-device path of the move.
            env["MOBILEZOO_TEST_FORCE_EXDEV"] = "1"
        root = str(Path(__file__).parents[2])
        done = subprocess.run([sys.executable, "-c", _WRITER, mode, str(out), root],
                              env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        if mode == "kill":
            assert done.returncode == -9, done.stderr[-2000:]
        else:
            assert done.returncode != 0
            assert "previous checkpoint at that path is intact" in done.stderr
        last = torch.load(out / "last.ckpt", weights_only=True)  # loads: not truncated
        assert last["global_step"] in (3, 6)
        # A run resumes from it.
        task = _Tiny()
        trainer = Trainer(max_steps=last["global_step"] + 2, logger=False,
                          enable_progress_bar=False, enable_checkpointing=False,
                          num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
        trainer.fit(task, _loader(), ckpt_path=out / "last.ckpt")
        assert trainer.global_step == last["global_step"] + 2
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(out)], check=False)


class KillAt(Callback):
    """Sends ``signal`` to this process after optimizer step ``step`` (for CLI tests)."""

    def __init__(self, step: int = 2, signal_name: str = "SIGTERM") -> None:
        self.step, self.signal = step, getattr(signal, signal_name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_config_checkpoints_the_latest_state_and_on_sigterm(config: Path) -> None:
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    ckpts = [c for c in callbacks if c["class_path"] == "tasks.ModelCheckpoint"]
    assert len(ckpts) == 1, config.name
    args = ckpts[0].get("init_args") or {}
    assert args.get("save_last", True) is True and args.get("save_on_exception", True) is True


def test_sigterm_on_the_main_job_saves_the_step_and_exits_143(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "tasks.cli", "fit", "-c",
        str(CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"),
        f"--trainer.default_root_dir={out}", "--trainer.max_epochs=1", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", f"--data.init_args.root={tmp_path / 'demo'}",
        "--data.init_args.scene.num_train=16", "--data.init_args.scene.num_val=2",
        "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
        "--model.init_args.image_size=64", "--data.init_args.loader.batch_size=2",
        "--trainer.callbacks+=tests.tasks.test_checkpointing.KillAt",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 143, done.stderr[-3000:]
    (last,) = out.rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_a_relative_and_an_absolute_dirpath_of_one_folder_are_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.chdir(tmp_path)
    saved = ModelCheckpoint("run/checkpoints").state_dict()
    saved["last_model_path"] = "run/checkpoints/last.ckpt"
    again = ModelCheckpoint(str(tmp_path / "run" / "checkpoints"))
    again.load_state_dict(saved)
    assert not [w for w in recwarn if "dirpath has changed" in str(w.message)]
    assert again.last_model_path == "run/checkpoints/last.ckpt"  # kept, not dropped


@pytest.mark.parametrize("callback_cls", [ModelCheckpoint, LightningModelCheckpoint],
                         ids=["tasks", "lightning"])  # fmt: skip
def test_a_resumed_checkpoint_never_deletes_files_outside_its_folder(
    tmp_path: Path, callback_cls: type
) -> None:
    """A checkpoint whose callback state names ``<dirpath>/../../victims/x`` as its best,
    k-th best and last files: resuming from it must not delete them (it did: Lightning's
    "inside dirpath" test keeps ``..``)."""
    folder = tmp_path / "run" / "ckpts"
    victims = tmp_path / "victims"
    victims.mkdir()
    names = ["best.txt", "kth.txt", "last.txt", "topk.txt"]
    for name in names:
        (victims / name).write_text("precious")
    folder.mkdir(parents=True)
    link = folder / "link"
    link.symlink_to(victims)  # a path that is inside only before links are resolved

    def fit(steps: int, ckpt_path: Path | None = None) -> None:
        callback = callback_cls(folder, save_top_k=1, every_n_train_steps=1, save_last=True)
        trainer = Trainer(max_steps=steps, logger=False, enable_progress_bar=False,
                          limit_val_batches=0, callbacks=[callback],
                          enable_model_summary=False)  # fmt: skip
        trainer.fit(_Tiny(), _loader(), ckpt_path=ckpt_path)

    fit(2)
    hostile = torch.load(folder / "last.ckpt", weights_only=True)
    (key,) = [k for k in hostile["callbacks"] if k.startswith("ModelCheckpoint")]
    escape = f"{folder}/../../victims/"
    hostile["callbacks"][key].update(
        best_model_path=escape + "best.txt", kth_best_model_path=escape + "kth.txt",
        last_model_path=f"{link}/last.txt",
        best_k_models={escape + "topk.txt": torch.tensor(0.0), escape + "kth.txt": torch.tensor(1.0)},
    )  # fmt: skip
    torch.save(hostile, tmp_path / "hostile.ckpt")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fit(5, ckpt_path=tmp_path / "hostile.ckpt")
    assert sorted(p.name for p in victims.iterdir()) == names
    assert any("outside its folder" in str(w.message) for w in seen)
