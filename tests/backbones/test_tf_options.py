"""Options for TF-trained weights: channel rounding, TF "SAME" padding, align_corners.
Defaults unchanged; parameter and multiply-add counts unchanged by padding."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from backbones import count_madds, count_parameters, mobilenet_v2
from backbones.layers import Conv2dSame, ConvBNReLU6
from heads import deeplabv3_mobilenet_v2, multiscale_flip_predict, ssdlite_mobilenet_v2


def test_conv2d_same_pads_like_tensorflow_on_even_sizes() -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(3, 4, 3, 2)
    x = torch.randn(1, 3, 8, 8)
    # TF "SAME", stride 2, 3x3 on 8: total padding 1, all of it after (bottom/right).
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, conv.bias, stride=2)
    torch.testing.assert_close(conv(x), expected)
    symmetric = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1)
    assert not torch.allclose(conv(x), symmetric)


def test_conv2d_same_equals_symmetric_padding_on_odd_sizes_and_with_dilation() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 9)
    conv = Conv2dSame(3, 4, 3, 2)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1))
    dilated = Conv2dSame(3, 4, 3, 1, dilation=2)
    expected = F.conv2d(x, dilated.weight, dilated.bias, padding=2, dilation=2)
    torch.testing.assert_close(dilated(x), expected)


def test_padding_tf_changes_only_strided_convs_and_no_counts() -> None:
    torch_net, tf_net = mobilenet_v2(), mobilenet_v2(padding="tf")
    assert sum(isinstance(m, Conv2dSame) for m in tf_net.modules()) == 5  # strides 2..32
    assert not any(isinstance(m, Conv2dSame) for m in torch_net.modules())
    assert count_parameters(tf_net) == count_parameters(torch_net)
    x = torch.randn(1, 3, 224, 224)
    assert count_madds(tf_net, x) == count_madds(torch_net, x)
    tf_net.load_state_dict(torch_net.state_dict())  # same keys and shapes
    with torch.no_grad():
        odd = torch.randn(1, 3, 225, 225)
        for a, b in zip(tf_net.eval()(odd).values(), torch_net.eval()(odd).values(), strict=True):
            torch.testing.assert_close(a, b)


def test_bad_padding_names_the_choices() -> None:
    with pytest.raises(ValueError, match=r"padding must be one of \('torch', 'tf'\), got 'same'"):
        ConvBNReLU6(3, 8, padding="same")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible_by"):
        mobilenet_v2(divisible_by=0)


def test_divisible_by_1_keeps_tf_deeplab_channels() -> None:
    rounded = mobilenet_v2(0.5, out_features=["layer_4", "layer_5_expansion", "layer_18"])
    tf = mobilenet_v2(
        0.5, out_features=["layer_4", "layer_5_expansion", "layer_18"], divisible_by=1
    )
    assert rounded.channels() == [16, 96, 160]
    assert tf.channels() == [12, 72, 160]  # TF DeepLab width 0.5: 24 * 0.5, 12 * 6
    assert [i.channels for i in tf.feature_info if i.name == "layer_1"] == [16]


def test_divisible_by_is_a_no_op_at_width_1() -> None:
    a, b = mobilenet_v2(), mobilenet_v2(divisible_by=1)
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }


def test_tf_slim_rounds_expansions_to_8_without_rounding_block_widths() -> None:
    net = mobilenet_v2(0.35, divisible_by=1, out_features=["layer_8_expansion", "layer_7"])
    # 32 * 0.35 = 11.2 -> 11 channels; the next expansion, 66, is rounded to 64 (TF-slim).
    assert net.channels() == [64, 11]


def test_deeplab_align_corners_option() -> None:
    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v2(num_classes=3, align_corners=True).eval()
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        logits = model.forward_logits(x)
        expected = F.interpolate(logits, size=(65, 65), mode="bilinear", align_corners=True)
        torch.testing.assert_close(model(x), expected)
        default = deeplabv3_mobilenet_v2(num_classes=3).eval()
        assert default.align_corners is False


class _IdentitySegmenter(torch.nn.Module):
    """Returns its input as logits: any resizing difference shows in the output."""

    align_corners = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images * 10


def test_multiscale_eval_follows_the_models_align_corners() -> None:
    torch.manual_seed(0)
    model = _IdentitySegmenter()
    x = torch.randn(1, 3, 33, 33)
    follows = multiscale_flip_predict(model, x, scales=(0.5, 1.0))
    explicit = multiscale_flip_predict(model, x, scales=(0.5, 1.0), align_corners=True)
    other = multiscale_flip_predict(model, x, scales=(0.5, 1.0), align_corners=False)
    torch.testing.assert_close(follows, explicit)
    assert (follows - other).abs().max() > 1e-3


def test_ssdlite_padding_tf_reaches_the_extra_layers_with_counts_unchanged() -> None:
    tf, ours = ssdlite_mobilenet_v2(padding="tf"), ssdlite_mobilenet_v2()
    assert sum(isinstance(m, Conv2dSame) for m in tf.extras.modules()) == 4
    assert count_parameters(tf) == count_parameters(ours)
    x = torch.randn(1, 3, 320, 320)
    assert count_madds(tf, x) == count_madds(ours, x)
    assert [tuple(f.shape[-2:]) for f in tf.eval().features(x)] == tf.feature_sizes((320, 320))
