"""Export file names name the model and the run, so exports do not replace each other."""

import re
from pathlib import Path

from tasks.export.names import default_stem


def test_checkpoints_of_two_runs_get_two_names(tmp_path: Path) -> None:
    run = tmp_path / "outputs" / "detection_demo" / "lightning_logs"
    first = default_stem(run / "version_0" / "checkpoints" / "last.ckpt", "detector")
    second = default_stem(run / "version_1" / "checkpoints" / "last.ckpt", "detector")
    assert re.fullmatch(r"ssdlite_mobilenet_v2-detection_demo-version_0-last-[0-9a-f]{6}", first)
    assert re.fullmatch(r"ssdlite_mobilenet_v2-detection_demo-version_1-last-[0-9a-f]{6}", second)


def test_the_same_relative_path_of_two_projects_gets_two_names(tmp_path: Path) -> None:
    """``export`` of ``a/outputs/.../last.ckpt`` and then ``b/outputs/.../last.ckpt`` into
    one folder: the second replaced the first."""
    relative = Path("outputs/detection_demo/lightning_logs/version_0/checkpoints/last.ckpt")
    first = default_stem(tmp_path / "a" / relative, "detector")
    second = default_stem(tmp_path / "b" / relative, "detector")
    assert first != second
    assert default_stem(tmp_path / "a" / relative, "detector") == first  # stable


def test_other_checkpoints_and_builders(tmp_path: Path) -> None:
    ckpt = tmp_path / "mine" / "epoch=3-step=8.ckpt"
    stem = default_stem(ckpt, "classifier")
    assert re.fullmatch(r"mobilenet_v2_classifier-mine-epoch3-step8-[0-9a-f]{6}", stem)
    assert default_stem("deeplabv3_mobilenet_v2", "segmenter") == "deeplabv3_mobilenet_v2"


def test_a_builder_with_other_arguments_gets_another_name() -> None:
    """The same builder with 80 and then 3 classes: the second replaced the first."""
    eighty = default_stem("ssdlite_mobilenet_v2", "detector", {"num_classes": 80})
    three = default_stem("ssdlite_mobilenet_v2", "detector", {"num_classes": 3})
    assert (eighty, three) == ("ssdlite_mobilenet_v2-num_classes80",
                               "ssdlite_mobilenet_v2-num_classes3")  # fmt: skip
    odd = default_stem("ssdlite_mobilenet_v2", "detector", {"weights": "/a b/c.pt"})
    assert re.fullmatch(r"ssdlite_mobilenet_v2-[0-9a-f]{6}", odd)
