"""Weight files: torchvision layouts, the hub cache, offline errors, unsafe pickles."""

from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
import torchvision

from backbones import mobilenet_v2
from backbones.weights import hub_checkpoint_path, load_state_dict_file
from heads import mobilenet_v2_classifier


def test_imagenet_weights_load_from_the_hub_cache() -> None:
    """A file already in the torch hub cache (as torchvision leaves it) is used offline."""
    reference = torchvision.models.mobilenet_v2().eval()
    path = hub_checkpoint_path("imagenet")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    model = mobilenet_v2_classifier(weights="imagenet").eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    path.unlink()


def test_offline_imagenet_error_says_where_to_put_the_file(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="copy that file to .*mobilenet_v2-7ebf99e0.pth"):
        mobilenet_v2(weights="imagenet_v2")


def test_wrapped_state_dict_and_missing_keys(tmp_path) -> None:
    state = torchvision.models.mobilenet_v2().state_dict()
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    mobilenet_v2(weights=tmp_path / "wrapped.pth")
    torch.save({"features.0.0.weight": state["features.0.0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match="partial.pth lacks"):
        mobilenet_v2(weights=tmp_path / "partial.pth")
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        mobilenet_v2(weights=tmp_path / "nope.pth")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_that_would_run_code_is_refused(tmp_path, capsys) -> None:
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"features.0.0.weight": _RunsCode()}, f)
    with pytest.raises(ValueError, match="cannot load weights file .*evil.pth safely"):
        load_state_dict_file(path)
    assert "this must never run" not in capsys.readouterr().out
