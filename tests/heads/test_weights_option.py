"""A failed ImageNet download names the option the user set, builder by builder."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from backbones import mobilenet_v2
from backbones.weights import WeightsDownloadError
from heads import deeplabv3_mobilenet_v2, mobilenet_v2_classifier, ssdlite_mobilenet_v2


@pytest.fixture
def offline(monkeypatch):
    def fail(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: ssdlite_mobilenet_v2(num_classes=3, weights_backbone="imagenet"), "weights_backbone"),
        (lambda: deeplabv3_mobilenet_v2(num_classes=3, weights_backbone="imagenet"), "weights_backbone"),
        (lambda: mobilenet_v2_classifier(num_classes=3, weights="imagenet"), "weights"),
        (lambda: mobilenet_v2(weights="imagenet"), "weights"),
    ],
)  # fmt: skip
def test_offline_message_names_the_option(offline, build, option) -> None:
    with pytest.raises(WeightsDownloadError, match=f"or set {option} to the path") as err:
        build()
    assert "URLError" in str(err.value)
    assert isinstance(err.value, RuntimeError)  # what callers caught before
