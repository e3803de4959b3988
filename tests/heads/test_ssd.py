"""SSD-MobileNetV2 (the Object Detection API's ``ssd_mobilenet_v2``): counts, the Object
Detection API's widths, output contract, gradients, weights round trip."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from backbones import count_madds, count_parameters
from heads import ssd_mobilenet_v2, ssdlite_mobilenet_v2
from heads.weights_loader import open_weights


def test_counts_and_wiring_at_300() -> None:
    """1917 anchors at 300 (the Object Detection API's), six maps of SSDLite's depths,
    full 3x3 extra convs and one 1x1 conv per predictor."""
    model = ssd_mobilenet_v2(num_classes=80).eval()
    assert count_parameters(model) == 5_902_901
    assert count_madds(model, torch.zeros(1, 3, 300, 300)) == 757_885_616
    maps = model.features(torch.zeros(1, 3, 300, 300))
    assert [m.shape[1] for m in maps] == [576, 1280, 512, 256, 256, 128]
    assert [m.shape[-1] for m in maps] == [19, 10, 5, 3, 2, 1]
    assert model.anchor_generator.num_anchors(model.feature_sizes((300, 300))) == 1917
    assert not model.separable
    assert [c.kernel_size for c in model.extras[0].modules() if isinstance(c, nn.Conv2d)] == [
        (1, 1),
        (3, 3),
    ]
    assert all(c.groups == 1 for c in model.extras.modules() if isinstance(c, nn.Conv2d))
    assert isinstance(model.head.cls_predictors[1], nn.Conv2d)
    assert model.head.cls_predictors[1].kernel_size == (1, 1)


def test_narrow_widths_follow_the_object_detection_api() -> None:
    """Width 0.35: ``mobilenet_base`` with ``min_depth`` 16 and ``Conv_1`` scaled, extra
    layers of ``int(depth * 0.35)``; SSDLite keeps its own rule (1280, 512, ...)."""
    model = ssd_mobilenet_v2(num_classes=3, width_mult=0.35)
    backbone = model.backbone
    assert backbone.channels(["layer_1", "layer_2", "layer_3", "layer_19"]) == [16, 16, 16, 448]
    assert [extra[-1][0].out_channels for extra in model.extras] == [179, 89, 89, 44]
    assert [extra[0][0].out_channels for extra in model.extras] == [89, 44, 44, 22]
    lite = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35)
    assert lite.backbone.channels(["layer_2", "layer_19"]) == [8, 1280]
    assert [extra[-1][0].out_channels for extra in lite.extras] == [512, 256, 256, 128]


def test_eval_contract_and_train_loss_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = ssd_mobilenet_v2(num_classes=3, width_mult=0.35).train()
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    losses = model.compute_loss(model(torch.randn(2, 3, 128, 128)), targets)
    losses["loss"].backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.eval()
    images = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        first, second = model(images), model(images)
    for det, again in zip(first, second, strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        torch.testing.assert_close(det["boxes"], again["boxes"], rtol=0, atol=0)


def test_state_dict_file_rebuilds_the_model_and_fine_tunes(tmp_path: Path) -> None:
    """``torch.save(model.state_dict())`` is recognized as SSD's (not SSDLite's), its width
    read from its shapes by SSD's channel rule, and gives the same model; another class
    count keeps all but the class predictors."""
    torch.manual_seed(0)
    model = ssd_mobilenet_v2(num_classes=3, width_mult=0.35)
    path = tmp_path / "ssd.pt"
    torch.save(model.state_dict(), path)
    assert open_weights(path).builder == "ssd_mobilenet_v2"
    again = ssd_mobilenet_v2(num_classes=3, weights=path)  # a bare state dict: its width
    assert again.backbone.width_mult == 0.35
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)
    tuned = ssd_mobilenet_v2(num_classes=5, weights=path)
    assert tuned.num_classes == 5
    box = "head.box_predictors.2.weight"
    torch.testing.assert_close(tuned.state_dict()[box], model.state_dict()[box])
