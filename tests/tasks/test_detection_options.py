"""The detector's options as two typed groups defined once, next to the code they configure:
``heads.PostprocessOptions`` (``model.init_args.postprocess``) and
``heads.MultiBoxLossOptions`` (``model.init_args.loss``), taken alike by the builders, the
models and both detection tasks; the keys that used to stand at the top level get a hint."""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from heads import MultiBoxLossOptions, PostprocessOptions, ssdlite_mobilenet_v2
from tasks import DetectionTask, MultiTaskTask
from tasks.cli.command import main as cli_main

CONFIGS = Path(__file__).parents[2] / "configs"
DET = str(CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml")
GROUPS = {"postprocess": PostprocessOptions, "loss": MultiBoxLossOptions}
FLAT_KEYS = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}


@pytest.mark.parametrize("task_cls", [DetectionTask, MultiTaskTask], ids=lambda c: c.__name__)
def test_schema_holds_both_groups_with_their_defaults_and_no_flat_key(task_cls) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(task_cls, "model", skip={"optimizer", "lr_scheduler"})
    schema = parser.get_defaults().model
    for group, cls in GROUPS.items():
        assert vars(schema[group]) == asdict(cls())
    assert not set(FLAT_KEYS) & set(vars(schema))


def _stdout(capsys, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def test_print_config_shows_both_groups_whole(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    printed = yaml.safe_load(_stdout(capsys, ["fit", "-c", DET, "--print_config"]))
    model = printed["model"]["init_args"]
    assert model["loss"] == asdict(MultiBoxLossOptions(min_negatives=3))  # the config's 3
    assert model["postprocess"] == asdict(PostprocessOptions())


@pytest.mark.parametrize("key", ["score_threshold", "min_negatives"])
def test_a_key_of_a_group_given_at_the_top_level_names_its_place(key, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", DET, f"--model.init_args.{key}=0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mobilezoo fit: error: unknown option --model.init_args.{key}; "
        f"did you mean --model.init_args.{FLAT_KEYS[key]}.{key}?"
    ]


@pytest.mark.parametrize(
    ("section", "key", "hint"),
    [
        ("model", "min_negatives", "model.init_args.loss.min_negatives"),
        ("model", "nms_iou", "model.init_args.postprocess.nms_iou"),
        ("model", "frozen_stage", "model.init_args.frozen_stages"),
        # an argument of BaseTask, which the task takes through **kwargs
        ("model", "freeze_backbone_step", "model.init_args.freeze_backbone_steps"),
        ("data", "batch_size", "data.init_args.loader.batch_size"),
    ],
)
def test_an_old_or_misspelt_key_in_a_config_file_names_its_place(
    section, key, hint, tmp_path, capsys
) -> None:
    """Inside a YAML file (not on the command line) an old flat key gets the same hint,
    found in the signature of the class the file configures."""
    config = yaml.safe_load(Path(DET).read_text())
    config[section]["init_args"][key] = 3
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "-c", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mobilezoo validate: error: --{section}.init_args: Option '{key}' is not accepted; "
        f"did you mean {hint}?"
    ]


def test_a_group_value_from_the_command_line_reaches_the_model(tmp_path, monkeypatch) -> None:
    """``--print_config`` aside, the values are the ones the built model uses."""
    seen = {}
    monkeypatch.setattr(
        DetectionTask, "on_fit_start", lambda self: seen.update(model=self.model) or None
    )
    cli_main(["fit", "-c", DET, f"--data.init_args.root={tmp_path / 'demo'}",
              "--data.init_args.scene.num_train=2", "--data.init_args.scene.num_val=1",
              "--data.init_args.scene.generated_size=64", "--data.init_args.image_size=64",
              "--data.init_args.loader.batch_size=2", "--model.init_args.width_mult=0.35",
              "--model.init_args.postprocess.nms_iou=0.7",
              "--model.init_args.loss.neg_pos_ratio=2", "--trainer.logger=false",
              "--trainer.enable_progress_bar=false", "--trainer.max_steps=1",
              "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path / 'run'}"])  # fmt: skip
    model = seen["model"]
    assert model.postprocessor.options == PostprocessOptions(nms_iou=0.7)
    assert model.loss.options == MultiBoxLossOptions(neg_pos_ratio=2.0, min_negatives=3)


def test_checkpoints_hold_the_groups_as_plain_dicts() -> None:
    """Checkpoints are read with ``weights_only=True``: no dataclass may be pickled."""
    task = DetectionTask(
        num_classes=2, width_mult=0.35, image_size=64,
        postprocess=PostprocessOptions(score_threshold=0.2),
    )  # fmt: skip
    assert task.hparams["postprocess"] == asdict(PostprocessOptions(score_threshold=0.2))
    assert task.hparams["loss"] == asdict(MultiBoxLossOptions())
    assert task.model.postprocessor.options.score_threshold == 0.2


def test_python_users_pass_a_group_to_the_builder() -> None:
    model = ssdlite_mobilenet_v2(
        num_classes=2, width_mult=0.35, image_size=64,
        postprocess=PostprocessOptions(score_threshold=0.3, max_detections=5),
        loss=MultiBoxLossOptions(min_negatives=3),
    ).eval()  # fmt: skip
    with torch.no_grad():
        (det,) = model(torch.randn(1, 3, 64, 64))
    assert len(det["scores"]) <= 5 and bool((det["scores"] > 0.3).all())
    assert model.loss.options.min_negatives == 3


@pytest.mark.parametrize(
    ("cls", "options", "message"),
    [
        (PostprocessOptions, {"score_threshold": 1.0}, "score_threshold must be in [0, 1), got 1.0"),
        (PostprocessOptions, {"score_threshold": math.nan}, "score_threshold must be in [0, 1), got nan"),
        (PostprocessOptions, {"nms_iou": 0.0}, "nms_iou must be in (0, 1], got 0.0"),
        (PostprocessOptions, {"max_detections": 0}, "topk_per_class and max_detections must be >= 1, got 300 and 0"),
        (PostprocessOptions, {"topk_candidates": 50}, "topk_candidates must be None or >= max_detections (100), got 50"),
        (MultiBoxLossOptions, {"neg_pos_ratio": 0.0}, "neg_pos_ratio must be > 0, got 0.0"),
        (MultiBoxLossOptions, {"neg_pos_ratio": math.nan}, "neg_pos_ratio must be > 0, got nan"),
        (MultiBoxLossOptions, {"min_negatives": -1}, "min_negatives must be >= 0, got -1"),
        (MultiBoxLossOptions, {"iou_threshold": 1.5}, "iou_threshold must be in (0, 1], got 1.5"),
        (MultiBoxLossOptions, {"box_weight": -1.0}, "box_weight must be >= 0, got -1.0"),
    ],
)  # fmt: skip
def test_values_out_of_range_are_refused_when_built(cls, options, message) -> None:
    with pytest.raises(ValueError) as err:
        cls(**options)
    assert str(err.value) == message


def test_a_value_out_of_range_is_one_line_through_the_cli(capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "-c", DET, "--model.init_args.postprocess.nms_iou=0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilezoo: error: model (tasks.DetectionTask): nms_iou must be in (0, 1], got 0.0"
    ]


@pytest.mark.parametrize("task_cls", [DetectionTask, MultiTaskTask], ids=lambda c: c.__name__)
def test_a_checkpoint_written_by_the_trainer_rebuilds_the_model_with_its_groups(
    task_cls, tmp_path
) -> None:  # fmt: skip
    """``load_checkpoint`` (export, benchmarks) rebuilds the task from the saved dicts."""
    import lightning

    from tasks.export import load_checkpoint

    small = {"width_mult": 0.35, "image_size": 64}
    small.update({"num_classes": 2} if task_cls is DetectionTask else {"num_det_classes": 2})
    task = task_cls(**small, postprocess=PostprocessOptions(score_threshold=0.25),
                    loss=MultiBoxLossOptions(min_negatives=3))  # fmt: skip
    trainer = lightning.Trainer(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu"
    )
    trainer.strategy.connect(task)
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    model = load_checkpoint(tmp_path / "task.ckpt")
    detector = getattr(model, "detector", model)
    assert detector.postprocessor.options == PostprocessOptions(score_threshold=0.25)
    assert detector.loss.options == MultiBoxLossOptions(min_negatives=3)
    with torch.no_grad():
        (det,) = model(torch.randn(1, 3, 64, 64))
    assert bool((det["scores"] > 0.25).all())
