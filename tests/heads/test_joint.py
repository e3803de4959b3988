"""SSDLite + Mobile DeepLabv3 on one backbone pass: counts, contract, weight loading."""

from __future__ import annotations

import pytest
import torch

from backbones import count_madds, count_parameters
from heads import optimize_for_inference
from heads.deeplabv3 import deeplabv3_mobilenet_v2
from heads.joint import SSDLiteDeepLabV3, ssdlite_deeplabv3_mobilenet_v2
from heads.ssdlite import ssdlite_mobilenet_v2


@pytest.fixture(scope="module")
def model_320() -> SSDLiteDeepLabV3:
    torch.manual_seed(0)
    return ssdlite_deeplabv3_mobilenet_v2(80, 81).eval()


def test_counts_at_320_pinned(model_320):
    """The detection half is SSDLite's 4,337,013 parameters exactly; the segmentation half
    adds the DeepLab head (on layer_18) and the stride-8 skip classifier."""
    x = torch.zeros(1, 3, 320, 320)
    params, madds = count_parameters(model_320), count_madds(model_320, x)
    assert params == 4_656_951
    assert madds == 816_432_064
    seg = count_parameters(model_320.seg_head) + count_parameters(model_320.seg_skip)
    assert params - seg == count_parameters(ssdlite_mobilenet_v2(80)) == 4_337_013
    # Against SSDLite and an output-stride-16 DeepLab run one after the other: 0.45x MAdds.
    single = count_madds(ssdlite_mobilenet_v2(80).eval(), x) + count_madds(
        deeplabv3_mobilenet_v2(81, output_stride=16).eval(), x
    )
    assert single == 1_812_195_264
    assert madds / single < 0.46


def test_feature_info_names_channels_strides(model_320):
    assert model_320.feature_info() == {
        "detection": [("layer_15_expansion", 576, 16), ("layer_19", 1280, 32)],
        "segmentation": [("layer_18", 320, 32), ("layer_7", 32, 8)],
    }
    no_skip = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.5, seg_skip=None)
    assert no_skip.feature_info()["segmentation"] == [("layer_18", 160, 32)]


def test_backbone_runs_once_per_forward(model_320):
    calls = []
    handle = model_320.backbone.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        model_320(torch.zeros(1, 3, 128, 128))
        model_320.forward_raw(torch.zeros(1, 3, 128, 128))
    handle.remove()
    assert len(calls) == 2


@pytest.mark.parametrize("size", [(160, 224), (97, 131)])
def test_eval_contract_and_determinism(size):
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(4, 5, width_mult=0.35).eval()
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        first, second = model(images), model(images)
        logits, deltas, seg = model.forward_raw(images)
    assert len(first) == 2
    for det, again in zip(first, second, strict=True):
        assert set(det) == {"boxes", "scores", "labels", "seg_logits"}
        assert det["seg_logits"].shape == (5, *size)
        assert det["labels"].lt(4).all() and det["labels"].ge(0).all()
        torch.testing.assert_close(det["seg_logits"], again["seg_logits"], rtol=0, atol=0)
        torch.testing.assert_close(det["boxes"], again["boxes"], rtol=0, atol=0)
    assert seg.shape == (2, 5, *size)
    num_anchors = model.anchor_generator.num_anchors(model.feature_sizes(size))
    assert logits.shape == (2, num_anchors, 5) and deltas.shape == (2, num_anchors, 4)
    split = model.postprocess(logits, deltas, size)
    torch.testing.assert_close(split[1]["scores"], first[1]["scores"])


def test_detection_half_equals_ssdlite_with_its_weights():
    """An SSDLite state dict loads unchanged and gives the same detections."""
    torch.manual_seed(0)
    ssd = ssdlite_mobilenet_v2(num_classes=3, width_mult=0.5).eval()
    joint = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.5).eval()
    left = joint.load_detector_state_dict(ssd.state_dict())
    assert left and all(k.startswith("seg_") for k in left)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ours, theirs = joint.forward_raw(x), ssd.forward_raw(x)
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=0)
    torch.testing.assert_close(ours[1], theirs[1], rtol=0, atol=0)
    other = ssdlite_mobilenet_v2(num_classes=5, width_mult=0.5)
    with pytest.raises(RuntimeError, match="size mismatch"):
        joint.load_detector_state_dict(other.state_dict())


def test_segmentation_head_loads_from_deeplab():
    """Without the skip, the segmentation half is DeepLab's head on layer_18 at stride 32."""
    torch.manual_seed(0)
    dl = deeplabv3_mobilenet_v2(num_classes=4, output_stride=32, width_mult=0.5).eval()
    joint = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.5, seg_skip=None).eval()
    joint.load_segmenter_state_dict(dl.state_dict())
    # DeepLab's backbone uses BN eps 1e-5, SSDLite's 1e-3: match them to compare exactly.
    for m in joint.backbone.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-5
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(joint.forward_raw(x)[2], dl(x))
    with pytest.raises(ValueError, match="MobileDeepLabV3"):
        joint.load_segmenter_state_dict({"backbone.x": torch.zeros(1)})


def test_train_outputs_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35, aspp=True).train()
    images = torch.randn(2, 3, 96, 96)
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    outputs = model(images)
    assert set(outputs) == {"cls_logits", "box_deltas", "anchors", "seg_logits"}
    assert outputs["seg_logits"].shape == (2, 4, 96, 96)
    masks = torch.randint(0, 4, (2, 96, 96))
    seg_loss = torch.nn.functional.cross_entropy(outputs["seg_logits"], masks)
    (model.compute_loss(outputs, targets)["loss"] + seg_loss).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_fast_path_matches_eager():
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        eager = model.forward_raw(x)
    fast = optimize_for_inference(model)
    with torch.inference_mode():
        quick = fast.forward_raw(x.contiguous(memory_format=torch.channels_last))
    assert fast.folded > 0
    for a, b in zip(eager, quick, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_invalid_arguments_name_the_value():
    with pytest.raises(ValueError, match="seg_skip must be one of .* got 'layer_9'"):
        ssdlite_deeplabv3_mobilenet_v2(3, 4, seg_skip="layer_9")
    with pytest.raises(ValueError, match="num_seg_classes must be >= 2 .* got 1"):
        ssdlite_deeplabv3_mobilenet_v2(3, 1)
    with pytest.raises(ValueError, match="image_size must be >= 32, got 16"):
        ssdlite_deeplabv3_mobilenet_v2(3, 4, image_size=16)


def test_compiled_fast_path_gives_the_eager_detections_and_masks():
    """The frozen-graph path (``optimize_for_inference``'s default) through eval forward."""
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35, image_size=96).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        eager = model(x)
    fast = optimize_for_inference(model)
    quick = fast(x)
    assert fast.compiled and len(quick) == 2
    for a, b in zip(eager, quick, strict=True):
        assert set(b) == {"boxes", "scores", "labels", "seg_logits"}
        torch.testing.assert_close(b["seg_logits"], a["seg_logits"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(b["scores"], a["scores"], rtol=1e-4, atol=1e-4)


def test_the_joint_model_is_a_detector_plus_a_segmentation_branch():
    """By composition: ``detector`` is a whole SSDLite on the shared modules, its state dict
    the joint model's minus the ``seg_*`` keys, and it follows train/eval."""
    from heads.ssdlite import SSDLite

    torch.manual_seed(0)
    joint = ssdlite_deeplabv3_mobilenet_v2(3, 4, width_mult=0.35).eval()
    assert isinstance(joint.detector, SSDLite) and not isinstance(joint, SSDLite)
    assert joint.detector.backbone is joint.backbone and joint.detector.head is joint.head
    assert "detector" not in dict(joint.named_children())
    det_keys = list(joint.detector.state_dict())
    assert [k for k in joint.state_dict() if not k.startswith("seg_")] == det_keys
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        alone, both = joint.detector(x), joint(x)
    for a, b in zip(alone, both, strict=True):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)
    joint.train()
    assert joint.detector.training and joint.detector.backbone.training
    assert not joint.eval().detector.training
    assert joint.forward_raw(x)._fields == ("cls_logits", "box_deltas", "seg_logits")


def test_class_prior_reaches_the_detector_half():
    import math

    model = ssdlite_deeplabv3_mobilenet_v2(
        num_det_classes=4, num_seg_classes=5, width_mult=0.35, class_prior=0.01
    )
    bias = model.detector.head.cls_predictors[0][-1].bias.view(-1, 5)
    assert torch.all(bias[:, 0] == 0)
    assert torch.allclose(bias[:, 1:], torch.tensor(math.log(0.0025) - math.log(0.99)))


def test_logits_layers_start_as_tf_deeplab_s():
    """TF DeepLab's logits init (normal, std 0.01, truncated at 2 std; bias 0): a fresh
    mask head starts at equal class scores. The default init put a fresh joint model's
    2-class pixel loss near 4 on real features (its skip reads raw layer_7 features)."""
    torch.manual_seed(0)
    model = ssdlite_deeplabv3_mobilenet_v2(num_det_classes=1, num_seg_classes=2, width_mult=0.35)
    for conv in (model.seg_head.classifier, model.seg_skip):
        assert conv.weight.abs().max() <= 0.02
        assert 0.007 < float(conv.weight.std()) < 0.011
        assert torch.all(conv.bias == 0)
