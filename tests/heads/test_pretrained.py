"""The weights registry: entries, architecture from weights, offline errors, the cache,
and fine-tuning loads (class predictors skipped and logged). Nothing is downloaded."""

from __future__ import annotations

import logging
import re
import urllib.error
from pathlib import Path

import pytest
import torch

from heads import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite_mobilenet_v2
from heads.pretrained import (
    META_KEY,
    fetch_source,
    get_weights,
    list_weights,
    load_for_finetuning,
)
from heads.weights_loader import architecture_of

ENTRIES = tuple(list_weights())  # registered next to their builders


@pytest.fixture
def hub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, and downloads that fail like an offline machine's."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.builder}:{e.name}")
def test_every_entry_says_source_input_labels_metric_and_check(entry) -> None:
    assert entry.url.startswith(("http://", "https://"))
    assert entry.sha256 is None or len(entry.sha256) == 64
    assert len(entry.categories()) == entry.num_classes
    assert entry.metric and entry.metric_source and entry.checked
    assert entry.padding in ("torch", "tf")
    image = torch.full((3, 10, 12), 255, dtype=torch.uint8)
    out = entry.transforms()(image)
    # TF DeepLab evaluates full images; classifiers and detectors take a fixed size.
    segmentation = entry.builder == "deeplabv3_mobilenet_v2"
    assert out.shape == (1, 3, *((10, 12) if segmentation else entry.input_size))
    assert out.max().item() == pytest.approx(entry.value_range[1])
    assert entry.transforms(resize=True)(image).shape[-2:] == entry.input_size


def test_tf_entries_expect_inputs_in_minus_one_to_one_and_tf_padding() -> None:
    for entry in list_weights():
        if entry.name.endswith(("_tf", "_tf_8bit", "_257")):
            low, high = entry.value_range
            assert -1.01 < low < -0.99 and 0.98 < high < 1.01, entry.name
            assert entry.padding == "tf", entry.name


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"\['voc_tf', 'voc_tf_8bit'"):
        get_weights("deeplabv3_mobilenet_v2", "voc")


def test_entry_sets_architecture_and_conflicts_are_refused() -> None:
    arch = architecture_of(
        deeplabv3_mobilenet_v2,
        "voc_tf_w050_257",
        width_mult=1.0,
        divisible_by=8,
        padding="torch",
        align_corners=False,
        aspp=False,
    )
    assert arch == {
        "width_mult": 0.5,
        "divisible_by": 1,
        "padding": "tf",
        "align_corners": True,
        "aspp": False,
    }
    with pytest.raises(ValueError, match="need width_mult=0.5, got width_mult=0.75"):
        architecture_of(deeplabv3_mobilenet_v2, "voc_tf_w050_257", width_mult=0.75)


def test_offline_error_says_which_file_to_put_where(hub_dir: Path) -> None:
    entry = get_weights("deeplabv3_mobilenet_v2", "voc_tf_8bit")
    with pytest.raises(RuntimeError) as info:
        deeplabv3_mobilenet_v2(weights="voc_tf_8bit")
    message = str(info.value)
    assert entry.url in message
    assert str(hub_dir / "checkpoints" / "deeplabv3_mnv2_pascal_quant.tflite") in message
    assert str(entry.cache_path) in message


def test_checksum_mismatch_is_refused(hub_dir: Path) -> None:
    entry = get_weights("mobilenet_v2_classifier", "imagenet_tf_8bit")
    entry.download_path.parent.mkdir(parents=True)
    entry.download_path.write_bytes(b"not the model")
    with pytest.raises(RuntimeError, match="sha256"):
        fetch_source(entry)


def test_named_weights_load_from_the_cache_without_network(hub_dir: Path) -> None:
    torch.manual_seed(0)
    entry = get_weights("deeplabv3_mobilenet_v2", "voc_tf")
    source = deeplabv3_mobilenet_v2(padding="tf", align_corners=True)
    entry.cache_path.parent.mkdir(parents=True)
    torch.save({"state_dict": source.state_dict(), META_KEY: {}}, entry.cache_path)
    model = deeplabv3_mobilenet_v2(weights="voc_tf")
    assert model.align_corners is True and model.backbone.padding == "tf"
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_converted_file_carries_its_architecture(tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = {"width_mult": 0.5, "divisible_by": 1, "padding": "tf", "align_corners": True}
    source = deeplabv3_mobilenet_v2(num_classes=4, **options).eval()
    path = tmp_path / "converted.pt"
    meta = {"builder": "deeplabv3_mobilenet_v2", "architecture": options}
    torch.save({"state_dict": source.state_dict(), META_KEY: meta}, path)
    model = deeplabv3_mobilenet_v2(num_classes=4, weights=path).eval()
    x = torch.randn(1, 3, 66, 66)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))
    # another family takes the backbone only, with the file's backbone options
    detector = ssdlite_mobilenet_v2(num_classes=3, weights=path)
    assert detector.backbone.padding == "tf" and detector.backbone.width_mult == 0.5
    for key, value in source.backbone.state_dict().items():
        torch.testing.assert_close(detector.backbone.state_dict()[key], value)


def test_deeplab_finetune_skips_only_the_classifier(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    trained = deeplabv3_mobilenet_v2(num_classes=21).state_dict()
    model = deeplabv3_mobilenet_v2(num_classes=5)
    fresh = model.head.classifier.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="mobilezoo"):
        skipped = load_for_finetuning(model, trained, ("head.classifier.",), "voc")
    assert skipped == ["head.classifier.weight", "head.classifier.bias"]
    assert "fine-tuning from voc" in caplog.text and "head.classifier.weight" in caplog.text
    torch.testing.assert_close(model.head.classifier.weight, fresh)
    torch.testing.assert_close(model.head.project[0].weight, trained["head.project.0.weight"])


def test_ssdlite_finetune_keeps_box_predictors_and_reinitializes_class_outputs(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    trained = ssdlite_mobilenet_v2(num_classes=80)
    path = tmp_path / "coco.pt"
    torch.save(trained.state_dict(), path)
    model = ssdlite_mobilenet_v2(num_classes=3, weights=path)
    state = model.state_dict()
    for key, value in trained.state_dict().items():
        if re.match(r"head\.cls_predictors\.\d\.1\.", key):  # the last 1x1 conv
            assert state[key].shape[0] == value.shape[0] // 81 * 4
        else:
            torch.testing.assert_close(state[key], value)


def test_weights_of_another_architecture_are_refused() -> None:
    state = deeplabv3_mobilenet_v2(width_mult=0.5).state_dict()
    with pytest.raises(ValueError, match="does not fit this model"):
        load_for_finetuning(deeplabv3_mobilenet_v2(), state, ("head.classifier.",))


def test_classifier_keeps_torchvision_names() -> None:
    names = [e.name for e in list_weights("mobilenet_v2_classifier")]
    assert names[:2] == ["imagenet", "imagenet_v2"]
    model = mobilenet_v2_classifier(padding="tf")
    assert model.backbone.padding == "tf"


def test_weights_api_imports_none_of_the_tf_readers() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import backbones, heads; from heads.pretrained import list_weights; "
        "heads.deeplabv3_mobilenet_v2(); list_weights(); "
        "bad = [m for m in ('tflite', 'flatbuffers', 'tensorboard', 'ai_edge_litert', "
        "'google.protobuf', 'tasks') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
