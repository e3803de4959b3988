"""The fast inference path: folded BatchNorm, channels-last, same outputs as the model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from heads.classifier import mobilenet_v2_classifier
from heads.inference import (
    InferenceModel,
    count_batchnorm,
    fold_batchnorm,
    optimize_for_inference,
)


def _randomize_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def test_fold_single_pair_matches_hand_computed() -> None:
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
    _randomize_batchnorm(seq)
    seq.eval()
    x = torch.randn(2, 3, 8, 8)
    conv, bn = seq[0], seq[1]
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    expected = conv(x) * scale.view(1, -1, 1, 1) + (bn.bias - bn.running_mean * scale).view(
        1, -1, 1, 1
    )
    assert fold_batchnorm(seq) == 1
    assert isinstance(seq[1], nn.Identity)
    assert seq[0].bias is not None
    torch.testing.assert_close(seq(x), expected, atol=1e-5, rtol=1e-5)


def test_fold_leaves_unpaired_layers_alone() -> None:
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4))
    assert fold_batchnorm(seq) == 0
    assert count_batchnorm(seq) == 2


@pytest.mark.parametrize("channels_last", [True, False])
def test_classifier_fast_path_equals_model(channels_last: bool) -> None:
    torch.manual_seed(0)
    model = mobilenet_v2_classifier(num_classes=10, width_mult=0.5)
    _randomize_batchnorm(model)
    model.eval()
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model, channels_last=channels_last)
    assert isinstance(fast, InferenceModel)
    assert count_batchnorm(fast) == 0
    assert fast.folded == count_batchnorm(model) == 52
    out = fast(x)
    assert out.is_inference()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    # The original model is untouched (a copy was folded) and still trains.
    assert count_batchnorm(model) == 52
    assert next(model.parameters()).requires_grad
    # Attribute look-ups fall through to the wrapped model.
    assert fast.num_classes == 10
    with pytest.raises(RuntimeError, match="cannot be trained"):
        fast.train()


def test_optimize_is_idempotent_and_inplace() -> None:
    model = mobilenet_v2_classifier(num_classes=3, width_mult=0.35)
    fast = optimize_for_inference(model, inplace=True)
    assert optimize_for_inference(fast) is fast
    assert count_batchnorm(model) == 0  # folded in place


def test_segmenter_fast_path_equals_model() -> None:
    deeplab = pytest.importorskip("heads.deeplabv3")
    torch.manual_seed(0)
    model = deeplab.deeplabv3_mobilenet_v2(num_classes=5, aspp=True)
    _randomize_batchnorm(model, seed=1)
    model.eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model)
    assert count_batchnorm(fast) == 0
    torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=1e-4)


def test_detector_fast_path_equals_model() -> None:
    ssdlite = pytest.importorskip("heads.ssdlite")
    torch.manual_seed(0)
    model = ssdlite.ssdlite_mobilenet_v2(num_classes=3, width_mult=0.5, image_size=160)
    _randomize_batchnorm(model, seed=2)
    model.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        logits, deltas = model.forward_raw(x)
    fast = optimize_for_inference(model)
    assert count_batchnorm(fast) == 0
    with torch.inference_mode():
        fast_logits, fast_deltas = fast.forward_raw(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast_logits, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_deltas, deltas, atol=1e-4, rtol=1e-4)
    detections = fast(x)
    assert len(detections) == 2
    assert set(detections[0]) == {"boxes", "scores", "labels"}


def test_compiled_path_traces_once_per_shape_and_matches() -> None:
    from heads import inference

    torch.manual_seed(0)
    model = mobilenet_v2_classifier(num_classes=10, width_mult=0.35)
    _randomize_batchnorm(model, seed=3)
    model.eval()
    fast = optimize_for_inference(model)
    eager = optimize_for_inference(model, compiled=False)
    assert fast.compiled and not eager.compiled
    for batch in (1, 3, 1):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(fast(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eager(x), expected, atol=1e-4, rtol=1e-4)
    assert len(fast._graphs) == 2 and all(g is not None for g in fast._graphs.values())
    assert not eager._graphs
    # Past the cap, new shapes run eagerly (still right), nothing more is traced.
    for side in range(32, 32 + 8 * inference.MAX_COMPILED_SHAPES, 8):
        x = torch.randn(1, 3, side, side)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), model(x), atol=1e-4, rtol=1e-4)
    assert len(fast._graphs) == inference.MAX_COMPILED_SHAPES
    # Called inside inference_mode (as predict does): traced all the same.
    with torch.inference_mode():
        x = torch.randn(2, 3, 48, 48)
        fresh = optimize_for_inference(model)
        assert fresh(x).shape == (2, 10) and len(fresh._graphs) == 1


def test_compiled_detector_equals_model_detections() -> None:
    ssdlite = pytest.importorskip("heads.ssdlite")
    torch.manual_seed(0)
    model = ssdlite.ssdlite_mobilenet_v2(num_classes=3, width_mult=0.35, image_size=128)
    _randomize_batchnorm(model, seed=4)
    model.eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        expected = model(x)
    fast = optimize_for_inference(model)
    got = fast(x)
    assert next(iter(fast._graphs.values())) is not None
    for det, ref in zip(got, expected, strict=True):
        assert len(ref["scores"]) > 0
        torch.testing.assert_close(det["scores"], ref["scores"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(det["labels"], ref["labels"])
        torch.testing.assert_close(det["boxes"], ref["boxes"], atol=1e-3, rtol=1e-4)


def test_first_call_runs_the_optimized_graph() -> None:
    """TorchScript profiles a frozen graph's first runs before optimizing it; the fast path
    runs those while tracing, so a user's first call is already the optimized graph."""
    fast = optimize_for_inference(mobilenet_v2_classifier(num_classes=10, width_mult=0.35))
    fast(torch.randn(1, 3, 32, 32))
    graph = str(torch.jit.last_executed_optimized_graph())
    assert "mkldnn_convolution" in graph and "prim::profile" not in graph
