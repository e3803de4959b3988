"""The command line as a user meets it: help, short errors, early checks, run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.checkpoints.run_dirs import checkpoint_run_dir, evaluation_dir
from tasks.cli.command import main as cli_main
from tasks.cli.errors import closest_key

CONFIGS = Path(__file__).parents[2] / "configs"
DEMO = str(CONFIGS / "classification_demo_mobilenetv2.yaml")


def _error_lines(capsys, args: list[str]) -> list[str]:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()


def test_misspelled_key_names_the_closest_valid_key_in_one_line(capsys) -> None:
    lines = _error_lines(capsys, ["fit", "-c", DEMO, "--model.init_args.lr", "0.1"])
    assert lines == [
        "mobilezoo fit: error: unknown option --model.init_args.lr; "
        "did you mean --model.init_args.optimizer.init_args.lr?"
    ]


def test_abbreviated_keys_are_rejected(capsys) -> None:
    lines = _error_lines(capsys, ["fit", "-c", DEMO, "--trainer.max_epoch=1"])
    assert lines == [
        "mobilezoo fit: error: unknown option --trainer.max_epoch; "
        "did you mean --trainer.max_epochs?"
    ]


def test_predict_without_input_fails_before_reading_the_checkpoint(tmp_path, capsys) -> None:
    garbage = tmp_path / "last.ckpt"
    garbage.write_bytes(b"not a checkpoint")  # reading it would fail differently
    lines = _error_lines(capsys, ["predict", "-c", DEMO, f"--ckpt_path={garbage}"])
    assert "predict needs input images: pass --data.init_args.predict_dir" in lines[0]
    assert len(lines) <= 2


def test_help_says_what_mobilezoo_is_and_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: mobilezoo")
    assert "MobileNetV2 with SSDLite detection" in out
    for command in ("fit", "validate", "test", "predict", "export:", "plot:"):
        assert command in out


def test_closest_key_prefers_the_same_last_part() -> None:
    valid = [
        "model.init_args.optimizer.init_args.lr",
        "trainer.max_epochs",
        "model.init_args.dropout",
    ]
    assert closest_key("model.init_args.lr", valid) == valid[0]
    assert closest_key("model.init_args.dropuot", valid) == "model.init_args.dropout"
    assert closest_key("nothing.like.it", valid) is None


def test_evaluation_folders_sit_in_the_checkpoint_run(tmp_path) -> None:
    ckpt = tmp_path / "lightning_logs" / "version_3" / "checkpoints" / "epoch=1.ckpt"
    assert checkpoint_run_dir(ckpt) == tmp_path / "lightning_logs" / "version_3"
    assert evaluation_dir(ckpt, "test") == tmp_path / "lightning_logs/version_3/test/epoch=1"
    assert evaluation_dir(tmp_path / "model.ckpt", "predict") == tmp_path / "predict" / "model"


def test_validate_and_predict_write_next_to_the_checkpoint(tmp_path, recwarn) -> None:
    common = ["-c", DEMO, f"--trainer.default_root_dir={tmp_path / 'run'}",
              f"--data.init_args.root={tmp_path / 'demo'}", "--data.init_args.train_per_class=2",
              "--data.init_args.val_per_class=1", "--data.init_args.loader.batch_size=4",
              "--model.init_args.width_mult=0.35", "--trainer.enable_progress_bar=false"]  # fmt: skip
    cli_main(["fit", *common, "--trainer.max_epochs=1"])
    logs = tmp_path / "run" / "lightning_logs"
    ckpt = logs / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    for _ in range(2):  # a second validate reuses the folder instead of opening version_1
        cli_main(["validate", *common, f"--ckpt_path={ckpt}"])
    assert sorted(p.name for p in logs.iterdir()) == ["version_0"]
    assert not [w for w in recwarn if "dirpath" in str(w.message)]
    assert list((logs / "version_0" / "validate" / "last").glob("events.out.tfevents.*"))
    cli_main(["predict", *common, f"--ckpt_path={ckpt}", "--trainer.callbacks.output_dir=null",
              f"--data.init_args.predict_dir={tmp_path / 'demo' / 'val'}"])  # fmt: skip
    assert (logs / "version_0" / "predict" / "last" / "predictions" / "predictions.csv").is_file()
    assert sorted(p.name for p in logs.iterdir()) == ["version_0"]


def test_unknown_command_lists_the_commands_outside_lightning_too(capsys) -> None:
    lines = _error_lines(capsys, ["fitt"])
    assert "invalid choice: 'fitt'" in lines[0]
    assert lines[-1] == (
        "also: mobilezoo export, mobilezoo plot, mobilezoo configs, mobilezoo weights, mobilezoo convert"
    )
