"""Export file names name the model and the run, so exports do not replace each other."""

from pathlib import Path

from tasks.export_names import default_stem


def test_checkpoints_of_two_runs_get_two_names(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "detection_demo" / "lightning_logs"
    first = default_stem(run / "version_0" / "checkpoints" / "last.ckpt", "detector")
    second = default_stem(run / "version_1" / "checkpoints" / "last.ckpt", "detector")
    assert first == "ssdlite_mobilenet_v2-detection_demo-version_0-last"
    assert second == "ssdlite_mobilenet_v2-detection_demo-version_1-last"


def test_other_checkpoints_and_builders(tmp_path: Path) -> None:
    ckpt = tmp_path / "mine" / "epoch=3-step=8.ckpt"
    assert default_stem(ckpt, "classifier") == "mobilenet_v2_classifier-mine-epoch3-step8"
    assert default_stem("deeplabv3_mobilenet_v2", "segmenter") == "deeplabv3_mobilenet_v2"
