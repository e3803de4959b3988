"""The generated detection and joint demos take their generation settings as one typed group,
``SceneOptions`` (``data.init_args.scene``), defined once next to the scene generator; the
keys that used to stand at the top level get a hint."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from tasks.cli.command import main as cli_main
from tasks.data.demo import DemoDetectionDataModule, DemoMultiTaskDataModule, SceneOptions

CONFIGS = Path(__file__).parents[2] / "configs"
DET = str(CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml")
SCENE_KEYS = [f.name for f in fields(SceneOptions)]


@pytest.mark.parametrize(
    ("cls", "num_train"), [(DemoDetectionDataModule, 3000), (DemoMultiTaskDataModule, 1000)]
)
def test_schema_holds_the_scene_group_with_each_demo_s_defaults(cls, num_train, tmp_path) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    schema = parser.get_defaults().data
    assert vars(schema.scene) == asdict(SceneOptions(num_train=num_train))
    assert not set(SCENE_KEYS) & set(vars(schema))  # only inside the group
    built = cls(root=str(tmp_path / "set"))  # nothing is generated before prepare_data
    assert built.spec["num_train"] == num_train and built.spec["size"] == 128


def test_print_config_shows_the_whole_group(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", DET, "--print_config", "--data.init_args.scene.seed=3"])
    assert exit_info.value.code in (0, None)
    scene = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["scene"]
    assert scene == asdict(SceneOptions(num_train=3000, seed=3))


def test_a_key_of_the_group_given_at_the_top_level_names_its_place(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", DET, "--data.init_args.num_train=2"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilezoo fit: error: unknown option --data.init_args.num_train; "
        "did you mean --data.init_args.scene.num_train?"
    ]


def test_the_group_decides_the_generated_set(tmp_path) -> None:
    scene = SceneOptions(num_train=3, num_val=2, generated_size=48, max_objects=1, seed=5)
    dm = DemoDetectionDataModule(root=str(tmp_path / "d"), scene=scene, image_size=48)
    dm.prepare_data()
    train = yaml.safe_load((tmp_path / "d" / "annotations" / "instances_train.json").read_text())
    assert len(train["images"]) == 3
    assert {(i["width"], i["height"]) for i in train["images"]} == {(48, 48)}
    assert max(sum(a["image_id"] == i["id"] for a in train["annotations"]) for i in
               train["images"]) <= 1  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_train": 0}, "num_train, num_val and max_objects must be >= 1, got 0, 100, 4"),
        ({"max_objects": 0}, "num_train, num_val and max_objects must be >= 1, got 1000, 100, 0"),
        (
            {"min_object_size": 0.6},
            "need 0 < min_object_size <= max_object_size < 1, got 0.6 and 0.5",
        ),
    ],
)
def test_values_out_of_range_are_refused_when_built(options, message) -> None:
    with pytest.raises(ValueError) as err:
        SceneOptions(**options)
    assert str(err.value) == message


def test_a_value_out_of_range_is_one_line_through_the_cli(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", DET, "--data.init_args.scene.num_val=0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilezoo: error: data (tasks.DemoDetectionDataModule): "
        "num_train, num_val and max_objects must be >= 1, got 3000, 0, 4"
    ]
