"""SSDLite-MobileNetV2: paper counts, output contract, gradients, determinism."""

from __future__ import annotations

import pytest
import torch

from backbones import count_madds, count_parameters
from heads.ssdlite import ssdlite_mobilenet_v2


@pytest.fixture(scope="module")
def model_320():
    torch.manual_seed(0)
    return ssdlite_mobilenet_v2(num_classes=80).eval()


def test_paper_counts_at_320(model_320):
    """Paper Table 6: 4.3M parameters, 0.8B multiply-adds; head + extras 2.1M."""
    params = count_parameters(model_320)
    madds = count_madds(model_320, torch.zeros(1, 3, 320, 320))
    assert params == 4_337_013
    assert madds == 788_830_144
    assert params - count_parameters(model_320.backbone) == 2_113_141
    assert 4.2e6 <= params <= 4.4e6 and 0.75e9 <= madds <= 0.85e9


def test_torchvision_anchor_layout_counts():
    model = ssdlite_mobilenet_v2(num_classes=80, anchor_layout="torchvision")
    assert count_parameters(model) == 4_484_148
    assert count_madds(model, torch.zeros(1, 3, 320, 320)) == 847_582_144


def test_wiring_taps_and_map_sizes(model_320):
    maps = model_320.features(torch.zeros(1, 3, 320, 320))
    assert [m.shape[1] for m in maps] == [576, 1280, 512, 256, 256, 128]
    assert [tuple(m.shape[-2:]) for m in maps] == [
        (20, 20),
        (10, 10),
        (5, 5),
        (3, 3),
        (2, 2),
        (1, 1),
    ]
    assert model_320.backbone.out_features == ("layer_15_expansion", "layer_19")
    bn = model_320.backbone.features[0][1]
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)


@pytest.mark.parametrize("size", [(320, 320), (301, 203), (160, 160)])
def test_feature_sizes_formula_equals_actual_maps(size):
    model = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35).eval()
    with torch.no_grad():
        maps = model.features(torch.zeros(1, 3, *size))
    assert model.feature_sizes(size) == [tuple(m.shape[-2:]) for m in maps]


def test_eval_contract_and_determinism():
    torch.manual_seed(0)
    model = ssdlite_mobilenet_v2(num_classes=4).eval()
    images = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        first, second = model(images), model(images)
        logits, deltas = model.forward_raw(images)
    assert len(first) == 2
    for det, again in zip(first, second, strict=True):
        assert set(det) == {"boxes", "scores", "labels"}
        assert det["boxes"].shape[1] == 4 and len(det["boxes"]) <= 100
        assert det["labels"].dtype == torch.int64 and int(det["labels"].max()) < 4
        assert (
            float(det["boxes"][:, 0::2].max()) <= 224 and float(det["boxes"][:, 1::2].max()) <= 160
        )
        torch.testing.assert_close(det["boxes"], again["boxes"])
    num_anchors = model.anchor_generator.num_anchors(model.feature_sizes((160, 224)))
    assert logits.shape == (2, num_anchors, 5) and deltas.shape == (2, num_anchors, 4)
    # split forward (export path) gives the same detections as forward
    split = model.postprocess(logits, deltas, (160, 224))
    torch.testing.assert_close(split[0]["scores"], first[0]["scores"])


def test_train_mode_loss_reaches_every_parameter():
    torch.manual_seed(0)
    model = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35).train()
    images = torch.randn(2, 3, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    outputs = model(images)
    assert set(outputs) == {"cls_logits", "box_deltas", "anchors"}
    losses = model.compute_loss(outputs, targets)
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_conv_bn_pairs_are_consecutive_for_folding(model_320):
    """Every BatchNorm directly follows its conv in an nn.Sequential (BN folding)."""
    for name, module in model_320.named_modules():
        if isinstance(module, torch.nn.Sequential):
            children = list(module)
            for i, child in enumerate(children):
                if isinstance(child, torch.nn.BatchNorm2d):
                    assert i > 0 and isinstance(children[i - 1], torch.nn.Conv2d), name


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        ssdlite_mobilenet_v2(num_classes=0)


def _object_probability(model: torch.nn.Module) -> torch.Tensor:
    """Mean softmax probability of each object class over the anchors of a random image."""
    torch.manual_seed(1)
    logits = model.eval().forward_outputs(torch.rand(1, 3, 128, 128) * 2 - 1)["cls_logits"]
    return logits.softmax(dim=-1)[0, :, 1:].mean(dim=0)


def test_class_prior_sets_the_initial_object_probability(tmp_path):
    torch.manual_seed(0)
    plain = ssdlite_mobilenet_v2(num_classes=2, width_mult=0.35)
    assert torch.all(_object_probability(plain) > 0.2)  # ~1/3 each: the background unlearned
    torch.manual_seed(0)
    prior = ssdlite_mobilenet_v2(num_classes=2, width_mult=0.35, class_prior=0.01)
    # 0.01 shared by the two classes; the small random weights move it a little
    assert torch.allclose(_object_probability(prior), torch.tensor([0.005, 0.005]), rtol=0.3)
    # fine-tuning: fresh predictors (another class count) start at the prior, loaded ones
    # keep their trained biases
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    tuned = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35, class_prior=0.03, weights=path)
    assert torch.allclose(_object_probability(tuned), torch.full((3,), 0.01), rtol=0.3)
    same = ssdlite_mobilenet_v2(num_classes=2, width_mult=0.35, class_prior=0.01, weights=path)
    assert torch.equal(same.head.cls_predictors[0][-1].bias, plain.head.cls_predictors[0][-1].bias)


def test_class_prior_of_ssd_s_plain_predictors():
    from heads.ssd import ssd_mobilenet_v2

    model = ssd_mobilenet_v2(num_classes=2, width_mult=0.35, class_prior=0.01)
    assert torch.allclose(_object_probability(model), torch.tensor([0.005, 0.005]), rtol=0.3)


@pytest.mark.parametrize("prior", [0.0, 1.0, -0.5, float("nan")])
def test_bad_class_prior(prior):
    with pytest.raises(ValueError, match="class_prior must be in"):
        ssdlite_mobilenet_v2(num_classes=1, width_mult=0.35, class_prior=prior)
