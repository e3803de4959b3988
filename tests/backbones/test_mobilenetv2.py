"""MobileNetV2 backbone: shapes and strides, paper fidelity, torchvision equivalence."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from backbones import count_madds, count_parameters, make_divisible, mobilenet_v2
from heads import mobilenet_v2_classifier

ALL_STAGE_ENDS = ["layer_2", "layer_4", "layer_7", "layer_14", "layer_19"]


def _randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so an eval-mode comparison exercises them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("width_mult", [0.35, 1.0, 1.4])
def test_feature_shapes_match_feature_info(output_stride: int, width_mult: float) -> None:
    names = [*ALL_STAGE_ENDS, "layer_1", "layer_15_expansion", "layer_18"]
    model = mobilenet_v2(width_mult, output_stride, out_features=names).eval()
    out = model(torch.randn(2, 3, 96, 128))
    assert list(out) == names
    for info in model.feature_info:
        if info.name in out:
            assert out[info.name].shape == (2, info.channels, 96 // info.stride, 128 // info.stride)
    assert max(model.strides()) == output_stride


def test_feature_info_at_width_1() -> None:
    info = {i.name: (i.channels, i.stride) for i in mobilenet_v2().feature_info}
    assert [info[n][1] for n in ALL_STAGE_ENDS] == [2, 4, 8, 16, 32]
    assert [info[n][0] for n in ALL_STAGE_ENDS] == [16, 24, 32, 96, 1280]
    assert info["layer_15_expansion"] == (576, 16)  # SSDLite tap
    assert info["layer_18"] == (320, 32)  # DeepLab tap
    assert info["layer_1"] == (32, 2)


def test_odd_input_sizes_round_up() -> None:
    out = mobilenet_v2(output_stride=16, out_features=["layer_18"]).eval()(
        torch.randn(1, 3, 513, 513)
    )
    assert out["layer_18"].shape == (1, 320, 33, 33)


@pytest.mark.parametrize(
    ("output_stride", "dilations"),
    [
        (32, [1] * 17),
        # TF rule: the layer that loses its stride keeps the current rate, later ones double.
        (16, [1] * 14 + [2, 2, 2]),
        (8, [1] * 7 + [2] * 7 + [4] * 3),
    ],
)
def test_dilation_rule(output_stride: int, dilations: list[int]) -> None:
    model = mobilenet_v2(output_stride=output_stride, out_features=["layer_18"])
    depthwise = [block.conv[-3][0] for block in model.features[1:]]
    assert [conv.dilation[0] for conv in depthwise] == dilations
    assert all(conv.padding[0] == conv.dilation[0] for conv in depthwise)
    assert [conv.stride[0] for conv in depthwise].count(2) == {32: 4, 16: 3, 8: 2}[output_stride]


def test_dilation_keeps_receptive_field() -> None:
    """A single pixel at OS16 influences a region as large as at OS32 (dilation really applied)."""

    def footprint(os_: int) -> int:
        model = mobilenet_v2(output_stride=os_, out_features=["layer_18"]).eval()
        x = torch.randn(1, 3, 161, 161, generator=torch.Generator().manual_seed(0)).requires_grad_()
        out = model(x)["layer_18"]
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
        hit = x.grad.abs().sum(dim=(0, 1)) > 0
        return int(hit.any(0).sum())

    assert footprint(16) >= footprint(32) > 100


# TF-slim table (1001 classes, 224x224): MAdds and params. TF's BatchNorm has no gamma
# (scale=False), which explains most of the ~1% params difference.
TF_SLIM = {1.4: (582e6, 6.06e6), 1.3: (509e6, 5.34e6), 1.0: (300e6, 3.47e6),
           0.75: (209e6, 2.61e6), 0.5: (97e6, 1.95e6), 0.35: (59e6, 1.66e6)}  # fmt: skip


@pytest.mark.parametrize("width_mult", sorted(TF_SLIM))
def test_counts_match_tf_slim_table(width_mult: float) -> None:
    madds_ref, params_ref = TF_SLIM[width_mult]
    model = mobilenet_v2_classifier(num_classes=1001, width_mult=width_mult)
    madds = count_madds(model, torch.randn(1, 3, 224, 224))
    params = count_parameters(model)
    assert abs(madds / madds_ref - 1) < 0.005, madds
    assert abs(params / params_ref - 1) < 0.02, params


def test_counts_equal_torchvision_exactly() -> None:
    ours = mobilenet_v2_classifier()
    x = torch.randn(1, 3, 224, 224)
    assert count_parameters(ours) == 3_504_872
    assert count_madds(ours, x) == count_madds(torchvision.models.mobilenet_v2(), x) == 300_774_272


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_logits_and_features_equal_torchvision(tmp_path, width_mult: float) -> None:
    reference = torchvision.models.mobilenet_v2(width_mult=width_mult).eval()
    _randomize_bn(reference)
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    model = mobilenet_v2_classifier(width_mult=width_mult, weights=str(path)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5
        feats = model.backbone(x)["layer_19"]
        assert (feats - reference.features(x)).abs().max() <= 1e-5
        backbone = mobilenet_v2(width_mult, out_features=["layer_7"], weights=str(path)).eval()
        assert (backbone(x)["layer_7"] - reference.features[:7](x)).abs().max() <= 1e-5


def test_make_divisible_never_rounds_down_more_than_10_percent() -> None:
    for value in range(1, 2000):
        v = value / 7
        assert make_divisible(v) % 8 == 0 and make_divisible(v) >= 0.9 * v
    assert make_divisible(32 * 0.35) == 16 and make_divisible(16 * 0.35) == 8


@pytest.mark.parametrize("frozen_stages", [0, 1, 4, 8])
def test_frozen_stages_get_no_gradient_and_keep_bn_stats(frozen_stages: int) -> None:
    model = mobilenet_v2(frozen_stages=frozen_stages, out_features=["layer_19"]).train()
    stage_of = [model._stage_of_layer(i) for i in range(1, 20)]
    before = [
        layer[1].running_mean.clone() if i == 0 else None for i, layer in enumerate(model.features)
    ]
    model(torch.randn(2, 3, 64, 64))["layer_19"].sum().backward()
    for stage, layer in zip(stage_of, model.features, strict=True):
        frozen = stage <= frozen_stages
        for p in layer.parameters():
            assert (p.grad is None) == frozen
            assert p.requires_grad != frozen
    stem_stats_kept = torch.equal(before[0], model.features[0][1].running_mean)
    assert stem_stats_kept == (frozen_stages >= 1)


def test_freeze_bn_keeps_running_stats() -> None:
    model = mobilenet_v2(freeze_bn=True, out_features=["layer_4"]).train()
    stats = model.features[2].conv[0][1].running_var.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(stats, model.features[2].conv[0][1].running_var)
    assert all(p.requires_grad for p in model.parameters())


def test_every_parameter_gets_a_gradient() -> None:
    model = mobilenet_v2(out_features=["layer_15_expansion", "layer_19"])
    out = model(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_deterministic_in_eval_mode() -> None:
    model = mobilenet_v2().eval()
    x = torch.randn(1, 3, 64, 64)
    a, b = model(x), model(x)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_only_needed_layers_are_built() -> None:
    assert len(mobilenet_v2(out_features=["layer_18"]).features) == 18
    assert len(mobilenet_v2(out_features=["layer_15_expansion"]).features) == 15


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_stride": 12}, "output_stride must be 8, 16 or 32, got 12"),
        ({"width_mult": 0}, "width_mult must be a positive number, got 0"),
        ({"width_mult": -1.0}, "width_mult must be a positive number"),
        ({"out_features": ["layer_99"]}, "out_features must be a non-empty subset"),
        ({"frozen_stages": 10}, "frozen_stages must be in 0..9, got 10"),
        ({"width_mult": 0.5, "weights": "imagenet"}, "width_mult=1.0 only"),
        ({"weights": "imagenet_v9"}, "weights must be one of"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mobilenet_v2(**kwargs)
