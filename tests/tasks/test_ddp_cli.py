"""Two processes through the real ``mobilezoo`` command, with each demo config's own
callbacks and logger (figures, checkpoints, TensorBoard), on CPU with gloo.

``fit`` on 2 processes (its last validation runs on both), then ``validate`` of its
``last.ckpt`` on 1 (and, for the detector, on 2): the metrics agree (evaluation is exact
under DDP), and the run holds what a 1-process run holds. And when one process of a run dies or hangs, the other stops with one line.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from tasks.cli.command import main as cli_main
from tasks.viz.plots import read_scalars
from tests.tasks._ddp_cli import run_cli

CONFIGS = Path(__file__).parents[2] / "configs"
TWO = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]
SMALL = ["--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
#: per demo config: a tiny set (8 or 9 training images: 2 steps on 2 processes with batch 2; an
#: odd number of validation images, which a padding sampler would count twice)
CASES = {
    "classification_demo_mobilenetv2": [
        "--model.init_args.num_classes=3", "--data.init_args.num_classes=3",
        "--data.init_args.train_per_class=3", "--data.init_args.val_per_class=3",
        "--data.init_args.image_size=32", "--data.init_args.resize_size=36",
        "--data.init_args.loader.batch_size=2",
    ],
    "detection_demo_ssdlite_mobilenetv2": [
        "--data.init_args.scene.num_train=8", "--data.init_args.scene.num_val=5",
        "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
        "--model.init_args.image_size=64", "--data.init_args.loader.batch_size=2",
    ],
    "segmentation_demo_deeplabv3_mobilenetv2": [
        "--data.init_args.train_images=8", "--data.init_args.val_images=5",
        "--data.init_args.generated_size=64", "--data.init_args.crop_size=64",
        "--data.init_args.loader.batch_size=2",
    ],
    "multitask_demo_ssdlite_deeplabv3_mobilenetv2": [
        "--data.init_args.scene.num_train=8", "--data.init_args.scene.num_val=5",
        "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
        "--model.init_args.image_size=64", "--data.init_args.loader.batch_size=2",
    ],
}  # fmt: skip
#: a hang fails the test after this many seconds instead of blocking the suite
LIMIT = 300


def _last_values(run: Path) -> dict[str, float]:
    """The last logged value of every ``val/`` scalar of a run folder's TensorBoard files."""
    return {tag: values[-1] for tag, (_, values) in read_scalars(run).items() if tag.startswith("val/")}  # fmt: skip


def _files(folder: Path) -> list[str]:
    """Files under ``folder``, relative; TensorBoard files named by kind (their names hold
    the host and pid)."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted({"events.out.tfevents" if "tfevents" in n else n for n in names})


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_process_fit_and_validate_through_the_cli(name: str, tmp_path: Path) -> None:
    config = ["-c", str(CONFIGS / f"{name}.yaml"), *CASES[name], *SMALL]
    root = tmp_path / "out"
    code, out = run_cli(["fit", *config, *TWO, f"--trainer.default_root_dir={root}"], tmp_path, LIMIT)  # fmt: skip
    assert code == 0, out[-4000:]
    run = root / "lightning_logs" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the last step
    # What rank 0 draws at each validation and at the end of fit, as on one process.
    assert (run / "images" / "val_examples.png").stat().st_size > 0
    fit_plots = sorted(p.name for p in (run / "plots").glob("val_*.png"))
    if not name.startswith("multitask"):  # tasks.viz.figures draws none for the joint task
        assert fit_plots, _files(run)

    # validate on 2 processes too for the detector (COCO results gathered from both ranks);
    # for the others fit's own last validation is the 2-process one (each launch of 2
    # processes costs ~25 s of imports on 2 cores)
    two_validate = name == "detection_demo_ssdlite_mobilenetv2"
    if two_validate:
        code, out = run_cli(["validate", *config, *TWO, f"--ckpt_path={last}"], tmp_path, LIMIT)
        assert code == 0, out[-4000:]
        shutil.move(run / "validate", run / "validate_2")
    cli_main(["validate", *config, f"--ckpt_path={last}"])  # one process, in this one

    one = _last_values(run / "validate" / "last")
    during_fit = _last_values(run)  # the validation at the last step, on 2 processes
    losses = [tag for tag in one if tag.startswith("val/loss")]  # the joint task: _det, _seg
    assert losses and all(one[tag] > 0 for tag in losses), one
    assert set(one) <= set(during_fit)
    for tag, value in one.items():
        assert during_fit[tag] == pytest.approx(value, rel=1e-5, abs=1e-6), tag
    if two_validate:
        two = _last_values(run / "validate_2" / "last")
        assert two.keys() == one.keys()
        for tag, value in one.items():
            assert two[tag] == pytest.approx(value, rel=1e-5, abs=1e-6), tag
        # The same files (figures, example images, logs) as the 1-process evaluation.
        assert _files(run / "validate_2" / "last") == _files(run / "validate" / "last")
    assert fit_plots == sorted(p.name for p in (run / "validate" / "last" / "plots").glob("*.png"))  # fmt: skip


def _fault_run(tmp_path: Path, rank: int, signal_name: str, strategy: list[str]) -> tuple[int, str, float]:  # fmt: skip
    """A 2-process ``fit`` (6 steps an epoch) in which ``rank`` gets ``signal_name`` after
    step 2; ``(exit code, output, seconds from the signal to the end of the last process)``."""
    config = ["-c", str(CONFIGS / "classification_demo_mobilenetv2.yaml"),
              *CASES["classification_demo_mobilenetv2"], "--data.init_args.train_per_class=8",
              *SMALL, "--trainer.devices=2", "--trainer.accelerator=cpu", *strategy,
              f"--trainer.default_root_dir={tmp_path / 'out'}",
              "--trainer.callbacks+=tests.tasks._ddp_cli.SignalRankAt",
              f"--trainer.callbacks.rank={rank}", "--trainer.callbacks.step=2",
              f"--trainer.callbacks.signal_name={signal_name}",
              f"--trainer.callbacks.pid_dir={tmp_path}"]  # fmt: skip
    code, out = run_cli(["fit", *config], tmp_path, LIMIT)
    signalled = tmp_path / "signalled"
    assert signalled.is_file(), out[-4000:]
    return code, out, time.time() - float(signalled.read_text())


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("mobilezoo: error:")]


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0], ids=["worker_killed", "launcher_killed"])
def test_a_killed_process_stops_the_other_with_one_line(rank: int, tmp_path: Path) -> None:
    # Lightning's default timeout (30 min): a dead peer is seen at once, not after it.
    code, out, seconds = _fault_run(tmp_path, rank, "SIGKILL", ["--trainer.strategy=ddp"])
    assert "TIMED OUT" not in out and "Traceback" not in out, out[-4000:]
    assert seconds < 120, seconds
    survivor = 1 - rank
    ours = f"mobilezoo: error: rank {survivor} of 2: another process of this multi-process run died"  # fmt: skip
    lines = _error_lines(out)
    assert all(line.startswith(ours) for line in lines), out[-4000:]
    if rank == 0:  # the orphaned worker finds out at its next collective
        assert len(lines) == 1, out[-4000:]
    else:
        # The launcher finds out at its next collective, or Lightning's watchdog thread of
        # the launcher, which polls its workers every 5 s, finds out first and kills it
        # (exit -9) after saying so in one line.
        watchdog = f"Child process with PID {(tmp_path / 'pid').read_text()} terminated with code -9"  # fmt: skip
        assert (len(lines) == 1 and code == 1) or (watchdog in out and code == -9), out[-4000:]


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("MOBILEZOO_LONG_TESTS"),
    reason="waits out a 60 s collective timeout: set MOBILEZOO_LONG_TESTS=1 (killed processes "
    "are tested by default)",
)
def test_a_hung_process_stops_the_other_at_the_collective_timeout(tmp_path: Path) -> None:
    # Rank 1 stops (SIGSTOP) mid-epoch: rank 0 waits in the gradient all-reduce until the
    # timeout set on the command line, then exits with one line and takes rank 1 with it
    # (run_cli waits for every process of the run). The timeout also bounds the start-up
    # rendezvous, in which rank 1 imports torch and Lightning: 1 minute leaves room for a
    # busy machine.
    timeout = ["--trainer.strategy=DDPStrategy", "--trainer.strategy.timeout=0:01:00"]
    code, out, seconds = _fault_run(tmp_path, 1, "SIGSTOP", timeout)
    assert "TIMED OUT" not in out, out[-4000:]
    assert code == 1, out[-4000:]
    (line,) = _error_lines(out)
    assert line.startswith("mobilezoo: error: rank 0 of 2: another process of this multi-process run did not answer within the timeout"), line  # fmt: skip
    assert 60 <= seconds < LIMIT, seconds
