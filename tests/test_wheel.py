"""The wheel stands alone: built from the checkout, installed into a fresh virtual
environment, it runs a shipped recipe by name from a folder outside the repository."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tasks.cli.configs import config_names, config_path, resolve_config_args

ROOT = Path(__file__).resolve().parents[1]


def test_every_recipe_is_found_by_name_and_other_values_are_left_alone(tmp_path: Path) -> None:
    names = config_names()
    assert names == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert "detection_demo_ssdlite_mobilenetv2" in names
    assert config_path("detection_demo_ssdlite_mobilenetv2.yaml") == (
        ROOT / "configs" / "detection_demo_ssdlite_mobilenetv2.yaml"
    )
    own = tmp_path / "detection_demo_ssdlite_mobilenetv2"
    own.write_text("seed_everything: 1\n")  # a user's own file wins over a recipe's name
    args = ["fit", "-c", "segmentation_demo_deeplabv3_mobilenetv2", "--config=classification_demo_mobilenetv2",
            "-c", str(own), "-c", "no_such_recipe", "--trainer.max_steps", "1"]  # fmt: skip
    assert resolve_config_args(args) == [
        "fit", "-c", str(ROOT / "configs" / "segmentation_demo_deeplabv3_mobilenetv2.yaml"),
        f"--config={ROOT / 'configs' / 'classification_demo_mobilenetv2.yaml'}",
        "-c", str(own), "-c", "no_such_recipe", "--trainer.max_steps", "1",
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="recipes: classification_demo"):
        config_path("../configs/detection_demo_ssdlite_mobilenetv2")


def _fresh_env(tmp_path: Path) -> Path:
    """A new virtual environment that sees this one's packages (not its mobilezoo) through
    a ``.pth`` line: the dependencies without a second 5 GB torch install."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    packages = next(env.glob("lib/python*/site-packages"))
    (packages / "_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return env


@pytest.mark.slow
def test_installed_wheel_runs_a_recipe_by_name_outside_the_repository(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env = _fresh_env(tmp_path)
    python = env / "bin" / "python"
    wheel = next(wheels.glob("mobilezoo-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--ignore-installed", "-q",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["OMP_NUM_THREADS"] = "1"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(env / "bin" / "mobilezoo"), *args], cwd=work, env=clean,
                              capture_output=True, text=True, timeout=600)  # fmt: skip

    where = subprocess.run([str(python), "-c", "import tasks; print(tasks.__file__)"],
                           cwd=work, env=clean, capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(env)), where.stdout  # the wheel, not the clone
    listed = run("configs")
    assert listed.returncode == 0, listed.stderr
    assert "detection_demo_ssdlite_mobilenetv2" in listed.stdout
    assert str(env) in listed.stdout  # the wheel's own copy
    copied = run("configs", "copy", "detection_demo_ssdlite_mobilenetv2")
    assert copied.returncode == 0, copied.stderr
    assert (work / "detection_demo_ssdlite_mobilenetv2.yaml").read_text() == (
        ROOT / "configs" / "detection_demo_ssdlite_mobilenetv2.yaml"
    ).read_text()
    fit = run(
        "fit", "-c", "detection_demo_ssdlite_mobilenetv2", "--trainer.max_steps", "1",
        "--trainer.limit_val_batches", "1", "--trainer.check_val_every_n_epoch", "1",
        "--data.init_args.scene.num_train", "16", "--data.init_args.scene.num_val", "4",
        "--trainer.enable_progress_bar", "false",
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    ckpt = work / "outputs" / "detection_demo" / "lightning_logs" / "version_0" / "checkpoints"
    assert (ckpt / "last.ckpt").is_file(), list(work.rglob("*"))[:20]
    unknown = run("fit", "-c", "no_such_recipe")
    assert unknown.returncode != 0
