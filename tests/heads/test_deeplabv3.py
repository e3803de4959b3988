"""Mobile DeepLabv3: exact sizes of the paper, shapes, dilation, multi-scale + flip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbones.complexity import count_madds, count_parameters
from heads.deeplabv3 import (
    DeepLabV3Head,
    MobileDeepLabV3,
    deeplabv3_mobilenet_v2,
    multiscale_flip_predict,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize(("aspp", "expected"), [(False, 2_113_557), (True, 4_523_541)])
def test_parameter_counts_match_paper(aspp: bool, expected: int, output_stride: int) -> None:
    model = deeplabv3_mobilenet_v2(num_classes=21, output_stride=output_stride, aspp=aspp)
    assert count_parameters(model) == expected
    # The paper's "MNet V2*": heads on the 320-channel layer_18; layer_19 is not built.
    assert model.feature == "layer_18"
    assert len(model.backbone.features) == 18


@pytest.mark.parametrize(
    ("aspp", "paper", "tolerance"), [(False, 2.75e9, 0.01), (True, 5.8e9, 0.1)]
)
def test_madds_at_513_os16_close_to_paper(aspp: bool, paper: float, tolerance: float) -> None:
    model = deeplabv3_mobilenet_v2(num_classes=21, output_stride=16, aspp=aspp)
    madds = count_madds(model, torch.randn(1, 3, 513, 513))
    # No ASPP: 2.741G against the paper's 2.75B. ASPP: 5.36G against 5.8B (the paper
    # does not say how its ASPP row was counted; the parameters match exactly).
    assert abs(madds - paper) / paper < tolerance


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("size", [(64, 64), (65, 97), (33, 47)])
def test_logits_at_input_resolution(output_stride: int, size: tuple[int, int]) -> None:
    model = deeplabv3_mobilenet_v2(num_classes=7, output_stride=output_stride, width_mult=0.35)
    model.eval()
    out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("output_stride", [8, 16])
def test_head_reads_feature_map_at_output_stride(output_stride: int) -> None:
    model = deeplabv3_mobilenet_v2(num_classes=3, output_stride=output_stride, width_mult=0.35)
    seen = {}
    model.head.register_forward_hook(lambda m, args, out: seen.update(shape=args[0].shape))
    model.eval()
    model(torch.randn(1, 3, 65, 97))
    # "same" padding: ceil(65 / os) x ceil(97 / os)
    assert seen["shape"][-2:] == (-(-65 // output_stride), -(-97 // output_stride))


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilation_computes_the_strided_network_densely(output_stride: int) -> None:
    """Atrous convolution at OS 8/16 must give exactly the OS32 features at every
    (32 / os)-th position: the receptive field is kept, only the sampling gets denser.
    A network that dropped the strides without dilating would fail this."""
    dense = deeplabv3_mobilenet_v2(num_classes=3, output_stride=output_stride, width_mult=0.35)
    strided = deeplabv3_mobilenet_v2(num_classes=3, output_stride=32, width_mult=0.35)
    for m in dense.modules():  # non-trivial BN statistics, so the check is not vacuous
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    strided.load_state_dict(dense.state_dict())
    dense.eval()
    strided.eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        a = dense.backbone(x)["layer_18"]
        b = strided.backbone(x)["layer_18"]
    step = 32 // output_stride
    assert a.shape[-2:] == (96 // output_stride, 128 // output_stride)
    torch.testing.assert_close(a[..., ::step, ::step], b, rtol=1e-4, atol=1e-4)
    dilations = {
        int(name.split(".")[1]) + 1: m.dilation[0]
        for name, m in dense.backbone.named_modules()
        if isinstance(m, nn.Conv2d) and m.groups > 1
    }
    if output_stride == 16:  # TF rule: layer_15 trades its stride, later layers dilate
        assert [dilations[i] for i in (14, 15, 16, 17, 18)] == [1, 1, 2, 2, 2]
    else:
        assert [dilations[i] for i in (7, 8, 9, 14, 15, 16, 18)] == [1, 1, 2, 2, 2, 4, 4]


@pytest.mark.parametrize(("output_stride", "rates"), [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates(output_stride: int, rates: tuple[int, ...]) -> None:
    model = deeplabv3_mobilenet_v2(output_stride=output_stride, aspp=True, width_mult=0.35)
    assert model.head.atrous_rates == rates
    convs = [b[0] for b in model.head.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation[0] for c in convs[1:]] == list(rates)
    assert all(c.groups == 1 for c in convs)  # regular, not separable, as in the paper


def test_head_layout_conv_bn_pairs_and_classifier_bias() -> None:
    head = DeepLabV3Head(320, 21)
    blocks = [head.image_pooling.conv, *head.branches, head.project]
    for block in blocks:
        assert isinstance(block[0], nn.Conv2d) and block[0].bias is None
        assert isinstance(block[1], nn.BatchNorm2d) and isinstance(block[2], nn.ReLU)
    assert head.classifier.bias is not None and head.classifier.out_channels == 21
    assert head.dropout.p == pytest.approx(0.1)  # DeepLab keep probability 0.9


def test_every_parameter_gets_a_gradient_and_eval_is_deterministic() -> None:
    model = deeplabv3_mobilenet_v2(num_classes=4, aspp=True, width_mult=0.35)
    model.train()
    out = model(torch.randn(2, 3, 48, 40))
    out.logsumexp(1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    model.eval()
    x = torch.randn(1, 3, 41, 39)
    torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)


def test_invalid_arguments_name_the_value() -> None:
    with pytest.raises(ValueError, match="output_stride must be 8, 16 or 32, got 4"):
        deeplabv3_mobilenet_v2(output_stride=4)
    with pytest.raises(ValueError, match="dropout"):
        DeepLabV3Head(320, 21, dropout=1.0)
    backbone = deeplabv3_mobilenet_v2(width_mult=0.35).backbone
    backbone.out_features = ("layer_17", "layer_18")
    with pytest.raises(ValueError, match="one feature map"):
        MobileDeepLabV3(backbone, 21)


class _ColumnRamp(nn.Module):
    """Logits that depend on the absolute column: class 1 grows to the right."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape[-2:]))
        b, _, h, w = x.shape
        ramp = torch.linspace(-2, 2, w).expand(b, 1, h, w)
        return torch.cat([torch.zeros_like(ramp), ramp + x[:, :1]], dim=1)


def test_multiscale_flip_matches_hand_computation() -> None:
    model = _ColumnRamp()
    x = torch.zeros(1, 3, 5, 7)
    single = multiscale_flip_predict(model, x)
    ramp = torch.linspace(-2, 2, 7)
    torch.testing.assert_close(single[0, 1, 0], torch.sigmoid(ramp))
    # The flipped pass sees the same ramp; flipped back it points left: the average of
    # sigmoid(r) and sigmoid(-r) is 0.5 everywhere.
    flipped = multiscale_flip_predict(model, x, flip=True)
    torch.testing.assert_close(flipped[0, 1], torch.full((5, 7), 0.5))
    # Every scale runs at its own size and comes back at the input size.
    model.calls.clear()
    multi = multiscale_flip_predict(model, x, scales=(0.5, 1.0, 1.75))
    assert model.calls == [(2, 4), (5, 7), (9, 12)]
    assert multi.shape == (1, 2, 5, 7)
    torch.testing.assert_close(multi.sum(1), torch.ones(1, 5, 7))
    with pytest.raises(ValueError, match="scales"):
        multiscale_flip_predict(model, x, scales=(0.0,))


def test_multiscale_flip_on_real_model_is_a_distribution() -> None:
    model = deeplabv3_mobilenet_v2(num_classes=3, width_mult=0.35).eval()
    x = torch.randn(2, 3, 37, 45)
    probs = multiscale_flip_predict(model, x, scales=(0.75, 1.0, 1.25), flip=True)
    assert probs.shape == (2, 3, 37, 45)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 37, 45))
    single = multiscale_flip_predict(model, x)
    torch.testing.assert_close(single, model(x).softmax(1))


def test_onnx_export_any_input_size(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = deeplabv3_mobilenet_v2(num_classes=5, width_mult=0.35).eval()
    path = tmp_path / "deeplab.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 65, 97),),
        str(path),
        input_names=["images"],
        output_names=["logits"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}},
        dynamo=False,
        opset_version=17,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 65, 97), (2, 3, 40, 33)]:
        x = torch.randn(*shape)
        (out,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(out), model(x), rtol=1e-4, atol=1e-4)
