"""The command line wins over a checkpoint; checkpoints are untrusted (issue 9, items 1-3)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer

from tasks import SegmentationTask
from tasks.checkpoints.hparams import check_hparams
from tasks.checkpoints.io import CheckpointError, fetch_checkpoint
from tasks.cli.command import main as cli_main

CONFIGS = Path(__file__).parents[2] / "configs"
SEG = CONFIGS / "segmentation_demo_deeplabv3_mobilenetv2.yaml"
DET = CONFIGS / "detection_demo_ssdlite_mobilenetv2.yaml"


def _segmentation_ckpt(path: Path, **overrides: Any) -> Path:
    """A SegmentationTask checkpoint as the CLI saves it, with the given hyper-parameters."""
    hparams = {"num_classes": 4, "width_mult": 0.35, "output_stride": 16, "eval_flip": False,
               "eval_scales": [1.0], "weights_backbone": "imagenet", "dropout": 0.3}  # fmt: skip
    kwargs = {**hparams, "weights_backbone": None}
    task = SegmentationTask(**kwargs)
    state = task.state_dict()
    hparams.update(overrides)
    torch.save({"state_dict": state, "global_step": 7, "pytorch-lightning_version": "2.6.6",
                "hyper_parameters": {"_class_path": "tasks.SegmentationTask", **hparams,
                                     "_instantiator": "lightning.pytorch.cli.instantiate_module"}},
               path)  # fmt: skip
    return path


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Runs the real CLI up to the Trainer call and records the task it built."""
    seen: dict[str, Any] = {}
    monkeypatch.setattr(sys, "argv", ["mobilezoo"])  # as from a shell, not pytest's argv

    def recorder(original):  # type: ignore[no-untyped-def]
        @functools.wraps(original)  # the CLI reads the signature for its options
        def record(self, model=None, *args, **kwargs):  # type: ignore[no-untyped-def]
            seen["task"], seen["ckpt_path"] = model, kwargs.get("ckpt_path")
            seen["weights_only"] = kwargs.get("weights_only")

        return record

    for name in ("validate", "test", "predict", "fit"):
        monkeypatch.setattr(Trainer, name, recorder(getattr(Trainer, name)))
    return seen


def _seg(subcommand: str, ckpt: Path | str, *extra: str) -> None:
    if subcommand == "predict":  # predict refuses to start without input images
        extra = (f"--data.init_args.predict_dir={Path(str(ckpt)).parent}", *extra)
    cli_main([subcommand, "-c", str(SEG), f"--ckpt_path={ckpt}", "--trainer.logger=false",
              *extra])  # fmt: skip


def test_evaluation_options_follow_the_command_line(tmp_path: Path, captured: dict) -> None:
    ckpt = _segmentation_ckpt(tmp_path / "seg.ckpt")
    _seg("validate", ckpt, "--model.init_args.output_stride=8",
         "--model.init_args.eval_scales=[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]",
         "--model.init_args.eval_flip=true")  # fmt: skip
    task = captured["task"]
    assert task.hparams.output_stride == 8 and task.model.backbone.output_stride == 8
    assert tuple(task.hparams.eval_scales) == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    assert task.hparams.eval_flip is True
    assert captured["weights_only"] is True


def test_architecture_comes_from_the_checkpoint_and_weights_never_download(
    tmp_path: Path, captured: dict
) -> None:
    ckpt = _segmentation_ckpt(tmp_path / "seg.ckpt")
    _seg("validate", ckpt)  # the demo config says width 0.5; the checkpoint 0.35
    task = captured["task"]
    assert task.hparams.width_mult == 0.35
    assert task.hparams.weights_backbone is None  # no ImageNet download for a checkpoint
    assert task.hparams.dropout == 0.3  # not given by the user: the checkpoint's value
    _seg("validate", ckpt, "--model.init_args.dropout=0.2")
    assert captured["task"].hparams.dropout == 0.2  # given: the user's value


def test_a_checkpoint_of_another_task_is_refused_naming_both(
    tmp_path: Path, captured: dict, capsys: pytest.CaptureFixture
) -> None:
    ckpt = _segmentation_ckpt(tmp_path / "seg.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "-c", str(DET), f"--ckpt_path={ckpt}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "saved by SegmentationTask" in err and "builds DetectionTask" in err
    assert "task" not in captured


def test_a_foreign_class_path_is_refused_before_import(tmp_path: Path, captured: dict,
                                                       capsys) -> None:  # fmt: skip
    ckpt = _segmentation_ckpt(tmp_path / "evil.ckpt", _class_path="evil_module_xyz.Task")
    with pytest.raises(SystemExit):
        _seg("validate", ckpt)
    assert "not a task of mobilezoo" in capsys.readouterr().err
    assert "evil_module_xyz" not in sys.modules


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width_mult": 1e6}, "width_mult=1000000.0 is outside"),
        ({"ignore_index": 10**9}, "ignore_index=1000000000 is outside"),
        ({"num_classes": -3}, "num_classes=-3 is outside"),
        ({"class_names": "x" * 1_000_000}, "hyper_parameters block is too large"),
        # past the pickle cap, refused from the zip directory before it is unpickled
        ({"class_names": "x" * 50_000_000}, "is 50053560 bytes, more than 4194304 (refused)"),
        ({"num_classes": "x" * 20_000}, "\"num_classes\": Expected a <class 'int'>"),
    ],
)
def test_hostile_hyper_parameters_are_refused_in_one_short_line(
    tmp_path: Path, captured: dict, capsys: pytest.CaptureFixture, overrides: dict, message: str
) -> None:
    ckpt = _segmentation_ckpt(tmp_path / "bad.ckpt", **overrides)
    with pytest.raises(SystemExit):
        _seg("validate", ckpt)
    err = capsys.readouterr().err
    assert message in err and len(err) < 500, err
    assert "task" not in captured


@pytest.mark.parametrize(
    ("hparams", "message"),
    [
        ({"loss": {"min_negatives": 10**9}}, "loss.min_negatives=1000000000 is outside"),
        ({"postprocess": {"max_detections": 10**7}}, "postprocess.max_detections=10000000"),
        ({"postprocess": {"nms_iou": float("nan")}}, "postprocess.nms_iou=nan is outside"),
    ],
)
def test_fields_of_option_groups_are_bounded(hparams: dict, message: str) -> None:
    """Option groups are stored as dicts: their fields get the same bounds as flat names."""
    with pytest.raises(CheckpointError, match=message.replace(".", r"\.")):
        check_hparams(hparams, "x.ckpt")
    check_hparams({"loss": {"min_negatives": 3}, "postprocess": {"nms_iou": 0.6}}, "x.ckpt")


@pytest.mark.parametrize("prior", [1.0, 0.0, -1.0, float("inf")])
def test_class_prior_is_a_probability(prior: float) -> None:
    with pytest.raises(CheckpointError, match="class_prior=.* is outside"):
        check_hparams({"class_prior": prior}, "x.ckpt")
    check_hparams({"class_prior": 0.01}, "x.ckpt")


def test_config_values_are_bounded_without_a_checkpoint(captured: dict, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["validate", "-c", str(SEG), "--model.init_args.width_mult=40"])
    assert "width_mult=40.0 is outside [0.1, 4.0]" in capsys.readouterr().err


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty"), (b"not a zip at all", "not a zip archive"), (None, "truncated")],
)
def test_unreadable_checkpoints_give_one_line_in_every_subcommand(
    tmp_path: Path, captured: dict, capsys: pytest.CaptureFixture, subcommand: str,
    content: bytes | None, message: str,
) -> None:  # fmt: skip
    path = tmp_path / "bad.ckpt"
    if content is None:
        good = _segmentation_ckpt(tmp_path / "good.ckpt").read_bytes()
        content, message = good[: len(good) // 2], "cannot be read"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        _seg(subcommand, path)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.count("\n") == 0 and str(path) in err and message in err


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_non_finite_weights_are_refused(tmp_path: Path, captured: dict, capsys,
                                        subcommand: str) -> None:  # fmt: skip
    path = _segmentation_ckpt(tmp_path / "nan.ckpt")
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k in ckpt["state_dict"] if k.endswith("running_var"))
    ckpt["state_dict"][name][0] = float("nan")
    torch.save(ckpt, path)
    with pytest.raises(SystemExit):
        _seg(subcommand, path)
    err = capsys.readouterr().err
    assert "NaN or infinite values" in err and name in err
    assert "task" not in captured


class _RunsCode:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "code ran"))


@pytest.fixture
def http_root(tmp_path: Path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``; yields (folder, url)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with an ETag (their SHA-256) and counts full downloads."""

    downloads = 0

    def log_message(self, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        path = Path(self.translate_path(self.path))
        if path.is_file():
            self.send_header("ETag", hashlib.sha256(path.read_bytes()).hexdigest())
        super().end_headers()

    def do_GET(self) -> None:
        type(self).downloads += 1
        super().do_GET()


def test_a_url_checkpoint_that_would_run_code_is_refused(
    tmp_path: Path, http_root, captured: dict, capsys
) -> None:
    www, url = http_root
    flag = tmp_path / "flag.txt"
    with open(www / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}, "payload": _RunsCode(flag)}, f)
    with pytest.raises(SystemExit):
        _seg("validate", f"{url}/evil.ckpt")
    assert "could run code" in capsys.readouterr().err
    assert not flag.exists()


def test_a_url_checkpoint_is_fetched_again_when_the_remote_file_changes(
    tmp_path: Path, http_root, captured: dict
) -> None:
    www, url = http_root
    _segmentation_ckpt(www / "model.ckpt", dropout=0.3)
    _seg("validate", f"{url}/model.ckpt")
    local = Path(captured["ckpt_path"])
    assert captured["task"].hparams.dropout == 0.3 and local.is_file()
    _segmentation_ckpt(www / "model.ckpt", dropout=0.25)  # same name, new content
    _seg("validate", f"{url}/model.ckpt")
    assert captured["task"].hparams.dropout == 0.25
    with pytest.raises(CheckpointError, match="SHA-256 of the download"):
        fetch_checkpoint(f"{url}/model.ckpt#sha256={'0' * 64}")


def test_an_unchanged_url_checkpoint_is_not_downloaded_again(tmp_path: Path, http_root) -> None:
    www, url = http_root
    _segmentation_ckpt(www / "model.ckpt")
    _QuietHandler.downloads = 0
    first = fetch_checkpoint(f"{url}/model.ckpt")
    second = fetch_checkpoint(f"{url}/model.ckpt")  # same ETag: the cached copy
    assert first == second and _QuietHandler.downloads == 1
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    fetch_checkpoint(f"{url}/model.ckpt#sha256={digest}")  # pinned and cached: no request
    assert _QuietHandler.downloads == 1


def test_a_checkpoint_from_converted_weights_rebuilds_their_architecture(
    tmp_path: Path, captured: dict
) -> None:
    from heads import deeplabv3_mobilenet_v2
    from heads.pretrained import META_KEY

    options = {"width_mult": 0.5, "divisible_by": 1, "padding": "tf", "align_corners": True}
    source = deeplabv3_mobilenet_v2(num_classes=4, **options)
    converted = tmp_path / "converted.pt"
    meta = {"builder": "deeplabv3_mobilenet_v2", "architecture": options}
    torch.save({"state_dict": source.state_dict(), META_KEY: meta}, converted)
    task = SegmentationTask(num_classes=4, weights=str(converted))
    assert {k: task.hparams[k] for k in options} == options  # recorded, not just used
    path = tmp_path / "finetuned.ckpt"
    torch.save({"state_dict": task.state_dict(), "pytorch-lightning_version": "2.6.0",
                "hyper_parameters": {"_class_path": "tasks.SegmentationTask",
                                     **task.hparams}}, path)  # fmt: skip
    converted.unlink()  # the checkpoint alone must be enough
    _seg("validate", path)
    rebuilt = captured["task"]
    assert {k: rebuilt.hparams[k] for k in options} == options
    rebuilt.load_state_dict(task.state_dict())
    x = torch.randn(1, 3, 66, 66)  # even size: "tf" and "torch" padding differ here
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.model.eval()(x), task.model.eval()(x))


def _run_folder(root: Path, version: int, best: str | None = None) -> Path:
    """``root/lightning_logs/version_N/checkpoints/`` with a ``last.ckpt`` (whose callback
    state records ``best`` as its best file) and, if given, that best file."""
    folder = root / "lightning_logs" / f"version_{version}" / "checkpoints"
    folder.mkdir(parents=True)
    last = _segmentation_ckpt(folder / "last.ckpt")
    if best is not None:
        _segmentation_ckpt(folder / best)
        ckpt = torch.load(last, weights_only=True)
        state = {"best_model_path": f"elsewhere/{best}", "dirpath": "elsewhere"}
        ckpt["callbacks"] = {"ModelCheckpoint{'monitor': 'val/miou'}": state}
        torch.save(ckpt, last)
    return folder


@pytest.mark.parametrize("subcommand", ["validate", "fit"])
def test_ckpt_path_last_and_best_name_the_config_s_latest_run(
    tmp_path: Path, captured: dict, caplog: pytest.LogCaptureFixture, subcommand: str
) -> None:
    """``--ckpt_path last`` evaluated random weights (Lightning looked in the new run's empty
    folder) and ``best`` was a traceback in a fresh process; both name files of the
    config's latest run, printed, and checked like any path."""
    _run_folder(tmp_path, 0)
    newest = _run_folder(tmp_path, 1, best="epoch=3-step=40.ckpt")
    root = f"--trainer.default_root_dir={tmp_path}"
    _seg(subcommand, "last", root)
    assert captured["ckpt_path"] == str(newest / "last.ckpt")
    _seg(subcommand, "best", root)
    assert captured["ckpt_path"] == str(newest / "epoch=3-step=40.ckpt")
    assert f"--ckpt_path best is {newest / 'epoch=3-step=40.ckpt'}" in caplog.text


def test_ckpt_path_last_is_checked_and_a_missing_one_is_one_line(
    tmp_path: Path, captured: dict, capsys: pytest.CaptureFixture
) -> None:
    root = f"--trainer.default_root_dir={tmp_path}"
    with pytest.raises(SystemExit) as exit_info:
        _seg("validate", "last", root)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.count("\n") == 0
    assert "--ckpt_path last: no last.ckpt in" in err and str(tmp_path) in err
    _seg("fit", "last", root)  # fit resumes when it can, else starts (as in Lightning)
    assert captured["ckpt_path"] is None
    del captured["task"]
    last = _run_folder(tmp_path, 0) / "last.ckpt"
    with pytest.raises(SystemExit):
        _seg("test", "best", root)  # last.ckpt records no best file
    assert "records no best checkpoint" in capsys.readouterr().err
    ckpt = torch.load(last, weights_only=True)
    next(v for v in ckpt["state_dict"].values() if v.is_floating_point()).view(-1)[0] = 1e400
    torch.save(ckpt, last)
    with pytest.raises(SystemExit):
        _seg("validate", "last", root)
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and str(last) in err
    assert "task" not in captured


@pytest.mark.parametrize("version", [None, "not-a-version", 3])
def test_a_checkpoint_without_a_lightning_version_is_one_line(
    tmp_path: Path, captured: dict, capsys: pytest.CaptureFixture, version: Any
) -> None:
    """Lightning's loader raised KeyError / InvalidVersion deep inside it."""
    path = _segmentation_ckpt(tmp_path / "odd.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["pytorch-lightning_version"] = version
    if version is None:
        del ckpt["pytorch-lightning_version"]
    torch.save(ckpt, path)
    with pytest.raises(SystemExit):
        _seg("validate", path)
    err = capsys.readouterr().err
    assert "is not a Lightning checkpoint: pytorch-lightning_version" in err and str(path) in err


@pytest.mark.slow
def test_evaluating_a_checkpoint_on_a_read_only_filesystem_writes_under_the_config_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A shared, read-only model store: ``validate`` raised OSError writing next to the
    checkpoint; it writes under ``trainer.default_root_dir`` instead."""
    store = tmp_path / "store"
    store.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(store)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a read-only filesystem")
    try:
        ckpt = _segmentation_ckpt(store / "model.ckpt")
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        with pytest.raises(OSError):
            (store / "probe").write_text("x")  # really read-only, also for root
        monkeypatch.setattr(sys, "argv", ["mobilezoo"])
        root = tmp_path / "root"
        cli_main(["validate", "-c", str(SEG), f"--ckpt_path={ckpt}",
                  f"--trainer.default_root_dir={root}", "--trainer.enable_progress_bar=false",
                  f"--data.init_args.root={tmp_path / 'demo'}", "--data.init_args.val_images=2",
                  "--data.init_args.train_images=2", "--data.init_args.generated_size=64",
                  "--data.init_args.crop_size=64"])  # fmt: skip
        assert list((root / "store" / "validate" / "model").rglob("events.out.tfevents*"))
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)
