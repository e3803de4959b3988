"""The loader options of every data module: one typed group (``data.init_args.loader``) in the
config schema, with each data module's own defaults, checked values and a hint for the keys
that used to stand at the top level."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

import tasks
from tasks.cli.command import main as cli_main
from tasks.data.base import LoaderOptions

CONFIGS = Path(__file__).parents[2] / "configs"
SEG = str(CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml")
DATA_MODULES = [getattr(tasks, name) for name in tasks.__all__ if name.endswith("DataModule")]
LOADER_KEYS = [f.name for f in fields(LoaderOptions)]


@pytest.mark.parametrize("cls", DATA_MODULES, ids=lambda cls: cls.__name__)
def test_schema_holds_the_loader_group_with_the_defaults_python_uses(cls, tmp_path) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    schema = parser.get_defaults().data
    built = cls(root=str(tmp_path / "set"))  # nothing is read before setup
    loader = vars(schema.loader)
    assert list(loader) == LOADER_KEYS
    assert loader["batch_size"] == built.batch_size
    assert loader["num_workers"] == built.num_workers
    assert (loader["eval_batch_size"] or loader["batch_size"]) == built.eval_batch_size
    # arguments a subclass forwards to its base (``**kwargs``) are in the schema too
    assert tuple(schema.mean) == built.mean and schema.predict_dir is None
    assert not set(LOADER_KEYS) & set(vars(schema))  # only inside the group


def _stdout(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_and_help_show_the_whole_group_with_types(capsys) -> None:
    config = yaml.safe_load(_stdout(capsys, ["fit", "-c", SEG, "--print_config"]))
    data = config["data"]["init_args"]
    assert data["loader"] == asdict(LoaderOptions(batch_size=8))  # the config sets 8
    assert {"crop_size", "flip", "mean", "std", "predict_dir"} <= set(data)  # forwarded
    help_text = " ".join(
        _stdout(capsys, ["fit", "--data.help", "tasks.VOCSegmentationDataModule"]).split()
    )
    assert "--data.loader.batch_size BATCH_SIZE" in help_text
    assert "(type: int, default: 16)" in help_text  # VOC's batch size
    assert "--data.crop_size" in help_text and "default: 513" in help_text


def test_a_key_of_the_group_given_at_the_top_level_names_its_place(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", SEG, "--data.init_args.batch_size=2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilezoo fit: error: unknown option --data.init_args.batch_size; "
        "did you mean --data.init_args.loader.batch_size?"
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"eval_batch_size": 0}, "eval_batch_size must be >= 1, got 0"),
        ({"eval_batch_size": -2}, "eval_batch_size must be >= 1, got -2"),
        ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
        ({"on_bad_sample": "ignore"}, "on_bad_sample must be 'raise' or 'skip', got 'ignore'"),
    ],
)
def test_values_out_of_range_are_refused_when_built(options, message) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        LoaderOptions(**options)


def test_eval_batch_size_out_of_range_is_one_line_through_the_cli(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", SEG, f"--data.init_args.root={tmp_path / 'demo'}",
                  "--data.init_args.loader.eval_batch_size=0"])  # fmt: skip
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilezoo: error: data (tasks.DemoSegmentationDataModule): "
        "eval_batch_size must be >= 1, got 0"
    ]
