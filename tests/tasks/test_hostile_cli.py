"""Hostile config files and command lines through the real CLI: one line naming the file
or the option and the problem, exit code 2, never a traceback, a hang or a late failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tasks.cli.command import main as cli_main
from tests.tasks.test_cli_checkpoints import _segmentation_ckpt

CONFIGS = Path(__file__).parents[2] / "configs"
SEG = str(CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml")
JOINT = str(CONFIGS / "multitask_demo_ssdlite_deeplabv3_mobilenetv2.yaml")


def _one_line(capsys, monkeypatch, args: list[str]) -> str:
    """The CLI's error for ``args``: exit code 2, one line, no traceback."""
    monkeypatch.setattr("sys.argv", ["mobilezoo"])
    with pytest.raises(SystemExit) as exit_info:
        cli_main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert len(lines[0]) < 500
    return lines[0]


def _seg_args(tmp_path: Path) -> list[str]:
    return ["fit", "-c", SEG, f"--data.init_args.root={tmp_path / 'demo'}",
            "--data.init_args.train_images=2", "--data.init_args.val_images=2",
            "--model.init_args.width_mult=0.35", "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_steps=1",
            "--trainer.limit_val_batches=1"]  # fmt: skip


def _laughs(levels: int, width: int = 10) -> str:
    """A "billion laughs": ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for k in range(1, levels):
        lines.append(f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * width)}]")
    return "\n".join(lines)


def test_yaml_billion_laughs_in_a_config_file(tmp_path: Path, capsys, monkeypatch) -> None:
    bomb = tmp_path / "laughs.yaml"
    body = _laughs(7).replace("\n", "\n  ")  # 10^7 strings in model.init_args.class_names
    bomb.write_text(f"_bomb:\n  {body}\nmodel:\n  class_path: tasks.SegmentationTask\n"
                    "  init_args:\n    class_names: *l6\n")  # fmt: skip
    line = _one_line(capsys, monkeypatch, ["validate", "-c", str(bomb)])
    assert str(bomb) in line and "expands to more than 1,000,000 values" in line


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path, capsys, monkeypatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "model:\n  class_path: tasks.SegmentationTask\n  init_args:\n    num_classes: [1\n"
    )
    line = _one_line(capsys, monkeypatch, ["fit", "-c", SEG, "-c", str(bad)])
    assert f"{bad}, line 5, column 1: did not find expected ',' or ']'" in line


def test_deeply_nested_class_names(tmp_path: Path, capsys, monkeypatch) -> None:
    deep = "[" * 3000 + "]" * 3000
    line = _one_line(
        capsys, monkeypatch, ["fit", "-c", SEG, f"--model.init_args.class_names={deep}"]
    )
    assert line.startswith("mobilezoo fit: error: --model.init_args.class_names: Expected")
    # in a config file too (a JSON document is YAML), below the parser's own limit
    config = tmp_path / "deep.yaml"
    config.write_text('{"model": {"init_args": {"class_names": ' + "[" * 500 + "]" * 500 + "}}}")
    line = _one_line(capsys, monkeypatch, ["fit", "-c", SEG, "-c", str(config)])
    assert str(config) in line and "nests deeper than 100 levels" in line


def test_deeply_nested_checkpoint_hparams(tmp_path: Path, capsys, monkeypatch) -> None:
    ckpt = _segmentation_ckpt(tmp_path / "deep.ckpt")
    content = torch.load(ckpt, weights_only=True)
    deep: list = ["x"]
    for _ in range(3000):
        deep = [deep]
    content["hyper_parameters"]["class_names"] = deep
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # torch.save recurses once per level too
    try:
        torch.save(content, ckpt)
    finally:
        sys.setrecursionlimit(limit)
    line = _one_line(capsys, monkeypatch, ["validate", "-c", SEG, f"--ckpt_path={ckpt}"])
    assert f"checkpoint {ckpt}: the hyper_parameters block nests deeper than 100" in line


def test_a_class_refusing_its_value_names_section_and_reason(tmp_path: Path, capsys,
                                                            monkeypatch) -> None:  # fmt: skip
    line = _one_line(
        capsys, monkeypatch, [*_seg_args(tmp_path), "--data.init_args.loader.batch_size=0"]
    )
    assert line == (
        "mobilezoo: error: data (tasks.DemoSegmentationDataModule): batch_size must be >= 1, got 0"
    )
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"not a weights file")
    line = _one_line(
        capsys, monkeypatch, [*_seg_args(tmp_path), f"--model.init_args.weights={evil}"]
    )
    assert line.startswith(
        f"mobilezoo: error: model (tasks.SegmentationTask): cannot load weights file {evil}"
    )


def test_detection_checkpoint_of_the_wrong_task(tmp_path: Path, capsys, monkeypatch) -> None:
    seg = _segmentation_ckpt(tmp_path / "seg.ckpt")
    line = _one_line(capsys, monkeypatch, ["fit", "-c", JOINT, "--model.init_args.width_mult=0.35",
                                           f"--model.init_args.detection_checkpoint={seg}"])  # fmt: skip
    assert line.startswith(
        f"mobilezoo: error: model (tasks.MultiTaskTask): detection_checkpoint {seg}: {seg} "
        "(a task checkpoint of deeplabv3_mobilenet_v2), not of ssdlite_mobilenet_v2"
    )


def test_a_value_of_the_wrong_type_is_one_line(capsys, monkeypatch) -> None:
    line = _one_line(
        capsys, monkeypatch, ["fit", "-c", SEG, "--model.init_args.num_classes", "abc"]
    )
    assert line == (
        "mobilezoo fit: error: --model.init_args.num_classes: Expected a <class 'int'>. Got "
        "value: abc"
    )


def test_num_classes_that_disagrees_with_the_data(tmp_path: Path, capsys, monkeypatch) -> None:
    line = _one_line(capsys, monkeypatch, [*_seg_args(tmp_path), "--model.init_args.num_classes=5"])
    assert line == "mobilezoo: error: model.num_classes=5 but the data has 4 classes"


def test_negative_learning_rate_stops_before_the_data(tmp_path: Path, capsys, monkeypatch) -> None:
    args = [*_seg_args(tmp_path), "--model.init_args.optimizer.init_args.lr=-0.1"]
    line = _one_line(capsys, monkeypatch, args)
    assert line == "mobilezoo: error: --model.init_args.optimizer.init_args.lr=-0.1 must be >= 0"
    assert not (tmp_path / "demo").exists()  # nothing generated, nothing built


def test_export_misspelled_option_gets_the_closest_one(capsys, monkeypatch) -> None:
    line = _one_line(capsys, monkeypatch, ["export", "ssdlite_mobilenet_v2", "--output_dirr", "x"])
    assert (
        line == "mobilezoo export: error: unknown option --output_dirr; did you mean --output_dir?"
    )
    line = _one_line(capsys, monkeypatch, ["export", "ssdlite_mobilenet_v2",
                                           "--num_check_images", "abc"])  # fmt: skip
    assert (
        line
        == "mobilezoo export: error: --num_check_images: Expected a <class 'int'>. Got value: abc"
    )


def test_export_config_billion_laughs_in_builder_args(tmp_path: Path, capsys, monkeypatch) -> None:
    bomb = tmp_path / "export.yaml"
    body = _laughs(7).replace("\n", "\n  ")
    bomb.write_text(f"source: ssdlite_mobilenet_v2\nbuilder_args:\n  {body}\n")
    line = _one_line(capsys, monkeypatch, ["export", "--config", str(bomb)])
    assert str(bomb) in line and "expands to more than 1,000,000 values" in line


def test_a_data_set_folder_that_is_not_there(tmp_path: Path, capsys, monkeypatch) -> None:
    voc = str(CONFIGS / "segmentation_voc_deeplabv3_mobilenetv2.yaml")
    line = _one_line(capsys, monkeypatch, ["validate", "-c", voc, f"--data.init_args.root={tmp_path}",
                                           "--model.init_args.weights_backbone=null",
                                           "--model.init_args.width_mult=0.35",
                                           "--trainer.logger=false", "--trainer.accelerator=cpu",
                                           "--trainer.devices=1", "--trainer.strategy=auto",
                                           "--trainer.num_nodes=1",
                                           "--trainer.sync_batchnorm=false"])  # fmt: skip
    assert line == (
        f"mobilezoo: error: no PASCAL VOC 2012 under {tmp_path}: expected "
        f"{tmp_path}/VOCdevkit/VOC2012/JPEGImages (the layout of VOCtrainval_11-May-2012.tar)"
    )


def test_export_data_module_refusing_its_value(capsys, monkeypatch) -> None:
    line = _one_line(capsys, monkeypatch, ["export", "ssdlite_mobilenet_v2", "--data",
                                           "tasks.DemoDetectionDataModule",
                                           "--data.init_args.loader.batch_size", "0"])  # fmt: skip
    assert line == (
        "mobilezoo export: error: data (tasks.DemoDetectionDataModule): batch_size must be "
        ">= 1, got 0"
    )
