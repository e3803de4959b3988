"""The tasks share one template (``tasks.base.BaseTask``): the optimizer arguments come
from the base class through ``**kwargs`` and stay in the config schema, and the class count
is given once, in the data section, from which the ``mobilezoo`` command takes the model's."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from tasks.checkpoints.hparams import init_parameters, task_hparams
from tasks.cli.command import main as cli_main
from tasks.task_classes import registered_tasks

CONFIGS = Path(__file__).parents[2] / "configs"
#: the optimizer arguments every task takes from BaseTask, with their defaults
BASE_ARGS = {"lr_scheduler": None, "lr_scheduler_interval": "step", "decay_norm_and_bias": False}
#: the model's class counts that a demo data module's ``num_classes: n`` gives
CLASS_COUNTS = {
    "tasks.ClassificationTask": lambda n: {"num_classes": n},
    "tasks.DetectionTask": lambda n: {"num_classes": n},
    "tasks.SegmentationTask": lambda n: {"num_classes": n},
    "tasks.MultiTaskTask": lambda n: {"num_det_classes": n, "num_seg_classes": n + 1},
}


def _printed(capsys, monkeypatch, args: list[str]) -> dict:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted({c.__name__ for c in registered_tasks().values()}))
def test_every_task_takes_the_base_arguments(name: str) -> None:
    task_cls = next(c for c in registered_tasks().values() if c.__name__ == name)
    assert set(BASE_ARGS) | {"optimizer"} <= init_parameters(task_cls)


def test_a_checkpoint_s_base_arguments_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    """They reach the task through ``**kwargs``: not unknown hyper-parameters."""
    task_cls = registered_tasks()["tasks.DetectionTask"]
    saved = {"num_classes": 3, "lr_scheduler_interval": "epoch", "decay_norm_and_bias": True}
    with caplog.at_level(logging.WARNING, logger="mobilezoo"):
        assert task_hparams(task_cls, saved, "x.ckpt") == saved
    assert "unknown" not in caplog.text


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_print_config_shows_every_option_and_the_data_s_class_count(
    config: Path, capsys, monkeypatch
) -> None:  # fmt: skip
    """The schema of every config, printed: the base class's arguments with their types'
    defaults next to the task's own, and the model's class count equal to the data's
    where the data module takes one (the demo sets); the printed config runs as it is."""
    printed = _printed(capsys, monkeypatch, ["-c", str(config)])
    model = printed["model"]["init_args"]
    assert {k: model[k] for k in BASE_ARGS if k != "lr_scheduler"} == {
        k: v for k, v in BASE_ARGS.items() if k != "lr_scheduler"
    }
    assert "optimizer" in model and "lr_scheduler" in model
    counts = CLASS_COUNTS[printed["model"]["class_path"]]
    data_count = printed["data"]["init_args"].get("num_classes")
    if data_count is None:  # a data module that reads its classes from its files
        assert all(isinstance(model[k], int) for k in counts(1))
    else:
        assert {k: model[k] for k in counts(1)} == counts(data_count)


def test_the_model_takes_the_data_s_class_count(tmp_path: Path, capsys, monkeypatch) -> None:
    """A demo config states the count in the data section only; another count there gives
    the model that many classes (and the run works: no disagreement at set-up)."""
    config = CONFIGS / "multitask_demo_ssdlite_deeplabv3_mobilenetv2.yaml"
    assert "num_det_classes" not in yaml.safe_load(config.read_text())["model"]["init_args"]
    printed = _printed(capsys, monkeypatch, ["-c", str(config), "--data.init_args.num_classes=2"])
    assert printed["model"]["init_args"]["num_det_classes"] == 2
    assert printed["model"]["init_args"]["num_seg_classes"] == 3
    config = CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml"
    cli_main(["fit", "-c", str(config), f"--data.init_args.root={tmp_path / 'demo'}",
              "--data.init_args.num_classes=2", "--data.init_args.train_images=2",
              "--data.init_args.val_images=2", "--data.init_args.loader.batch_size=2",
              "--model.init_args.width_mult=0.35", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false",
              f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_steps=1",
              "--trainer.limit_val_batches=1"])  # fmt: skip
    saved = yaml.safe_load(next((tmp_path / "run").rglob("config.yaml")).read_text())
    assert saved["model"]["init_args"]["num_classes"] == 2


def test_a_given_model_count_is_kept_and_checked(capsys, monkeypatch) -> None:
    """A value the user gives beats the data's (and ``setup`` then compares the two:
    ``test_hostile_cli::test_num_classes_that_disagrees_with_the_data``)."""
    config = CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"
    printed = _printed(capsys, monkeypatch, ["-c", str(config), "--model.init_args.num_classes=5"])
    assert printed["model"]["init_args"]["num_classes"] == 5
    assert printed["data"]["init_args"]["num_classes"] == 3


DETECTOR_CONFIGS = sorted(CONFIGS.glob("detection_*.yaml")) + sorted(
    CONFIGS.glob("multitask_*.yaml")
)


@pytest.mark.parametrize("config", DETECTOR_CONFIGS, ids=lambda p: p.stem)
def test_the_detectors_take_the_data_s_image_size(config: Path, capsys, monkeypatch) -> None:
    """The input size is stated once, in the data section, as the class count is."""
    assert "image_size" not in yaml.safe_load(config.read_text())["model"]["init_args"]
    printed = _printed(capsys, monkeypatch, ["-c", str(config), "--data.init_args.image_size=96"])
    assert printed["model"]["init_args"]["image_size"] == 96


def test_a_given_image_size_that_disagrees_with_the_data_is_one_line(
    tmp_path: Path, capsys, monkeypatch
) -> None:  # fmt: skip
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    config = CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", str(config), f"--data.init_args.root={tmp_path / 'demo'}",
                  "--data.init_args.scene.num_train=2", "--data.init_args.scene.num_val=1",
                  "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
                  "--model.init_args.image_size=96", "--model.init_args.width_mult=0.35",
                  "--trainer.logger=false", f"--trainer.default_root_dir={tmp_path / 'run'}",
                  "--trainer.max_steps=1"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "mobilezoo: error: model.image_size=96 but data.image_size=64; set both to the same value"
    )
