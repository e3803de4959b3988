"""``mobilezoo weights``, ``mobilezoo convert`` and a named entry's first use (download ->
convert -> cache), the download replaced by a copy of the real file: nothing is fetched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from heads import deeplabv3_mobilenet_v2, get_model_builder
from heads.pretrained import get_weights, list_weights
from tasks.cli.command import main
from tests.tasks.tf_files import FLOAT_DEEPLAB, need, photo

ENTRIES = tuple(list_weights())  # registered next to their builders


def test_weights_command_lists_every_entry(capsys: pytest.CaptureFixture[str]) -> None:
    main(["weights"])
    out = capsys.readouterr().out
    for entry in ENTRIES:
        assert f"| {entry.builder} | {entry.name} |" in out
    assert "VOC 2012 val mIoU 75.32" in out and "COCO mAP 22" in out


def test_weights_command_details_show_urls(capsys: pytest.CaptureFixture[str]) -> None:
    main(["weights", "--builder", "ssdlite_mobilenet_v2", "--details"])
    out = capsys.readouterr().out
    assert get_weights("ssdlite_mobilenet_v2", "coco_tf").url in out
    assert "deeplabv3" not in out


def test_convert_reports_a_bad_file_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "model.ckpt.index"
    index.write_bytes(b"\x00")
    with pytest.raises(SystemExit) as info:
        main(["convert", str(index), "--output", str(tmp_path / "out.pt")])
    assert info.value.code == 2
    assert "too short to be a TF checkpoint index" in capsys.readouterr().err


def test_convert_writes_a_file_the_builder_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
    output = tmp_path / "deeplab.pt"
    main(["convert", str(need(FLOAT_DEEPLAB)), "--output", str(output)])
    assert "deeplabv3_mobilenet_v2(num_classes=21, width_mult=0.5" in capsys.readouterr().out
    model = deeplabv3_mobilenet_v2(output_stride=8, weights=output).eval()
    assert model.backbone.divisible_by == 1 and model.align_corners
    from heads.tf_import import convert_file

    reference, _ = convert_file(FLOAT_DEEPLAB, builders=get_model_builder)
    x = torch.from_numpy(photo("cat.bmp", 257)).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_named_entry_downloads_converts_and_caches_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tflite", reason="the tf extra (tflite) is not installed")
    source = need(FLOAT_DEEPLAB)
    calls = []

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        shutil.copy(source, dst)

    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    try:
        entry = get_weights("deeplabv3_mobilenet_v2", "voc_tf_w050_257")
        first = deeplabv3_mobilenet_v2(output_stride=8, weights="voc_tf_w050_257").eval()
        assert calls == [entry.url] and entry.cache_path.is_file()  # sha256 verified
        entry.download_path.unlink()  # the cached conversion is enough from now on
        second = deeplabv3_mobilenet_v2(output_stride=8, weights="voc_tf_w050_257").eval()
        assert calls == [entry.url]
    finally:
        torch.hub.set_dir(previous)
    image = torch.from_numpy(photo("parrot.jpg", 257)).permute(2, 0, 1)
    x = entry.transforms()(image)
    with torch.no_grad():
        torch.testing.assert_close(first(x), second(x))
