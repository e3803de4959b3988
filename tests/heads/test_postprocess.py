"""Post-processing: threshold, class-wise NMS, top-k and the detection cap."""

from __future__ import annotations

import pytest
import torch

from heads.box_coder import BoxCoder
from heads.postprocess import PostprocessOptions, SSDPostprocessor

# three anchors: 0 and 1 overlap heavily (IoU 0.82), 2 is far away
ANCHORS = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=torch.float32)


def _logits(probs: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax is ``probs`` (rows: anchors, columns: background + classes)."""
    return torch.tensor(probs).log().unsqueeze(0)


def test_nms_is_class_wise_and_labels_are_zero_based():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.0001, 0.8], [0.3, 0.7, 0.0001]])
    out = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.5))(
        logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100)
    )[0]
    # anchors 0 and 1 overlap but have different classes: both stay
    assert out["labels"].tolist() == [0, 1, 0]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7], abs=1e-4)
    torch.testing.assert_close(out["boxes"], ANCHORS[[0, 1, 2]])


def test_class_agnostic_nms_keeps_one_class_per_box_and_suppresses_across_classes():
    """TF Lite's fast NMS: anchor 1's class 2 box is suppressed by anchor 0's class 1 box
    (the class-wise rule keeps both), and anchor 2 gives its best class only."""
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.0001, 0.8], [0.05, 0.4, 0.55]])
    post = SSDPostprocessor(
        options=PostprocessOptions(score_threshold=0.35, class_agnostic_nms=True)
    )
    out = post(logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100))[0]
    assert out["labels"].tolist() == [0, 1]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.55], abs=1e-4)
    torch.testing.assert_close(out["boxes"], ANCHORS[[0, 2]])
    wise = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.35))(
        logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100)
    )
    assert wise[0]["labels"].tolist() == [0, 1, 1, 0]


def test_fast_nms_suppresses_among_unclipped_boxes_as_tf_lite():
    """A box reaching 60 px out of the image overlaps its neighbour by IoU 0.4 as decoded
    (TF Lite's rule: both stay at nms_iou 0.6), by 1.0 once clipped; the kept boxes are
    then clipped."""
    anchors = torch.tensor([[-60, 0, 40, 40], [0, 0, 40, 40]], dtype=torch.float32)
    logits = _logits([[0.1, 0.9], [0.2, 0.8]])
    options = PostprocessOptions(score_threshold=0.5, nms_iou=0.6, class_agnostic_nms=True)
    out = SSDPostprocessor(options=options)(logits, torch.zeros(1, 2, 4), anchors, (100, 100))
    assert out[0]["scores"].tolist() == pytest.approx([0.9, 0.8], abs=1e-4)
    torch.testing.assert_close(out[0]["boxes"], torch.tensor([[0.0, 0, 40, 40]] * 2))


def test_nms_removes_same_class_overlap_and_threshold_drops():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.8, 0.0001], [0.7, 0.3, 0.0001]])
    out = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.35))(
        logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100)
    )[0]
    assert out["labels"].tolist() == [0]
    assert out["scores"].tolist() == pytest.approx([0.9], abs=1e-4)


def test_caps_and_clipping():
    logits = _logits([[0.1, 0.9, 0.0001], [0.2, 0.0001, 0.8], [0.3, 0.7, 0.0001]])
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 2, 0] = 10.0  # shift the far anchor right by its width: clipped at x = 64
    out = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.5, max_detections=2))(
        logits, deltas, ANCHORS, (64, 64)
    )[0]
    assert len(out["scores"]) == 2
    assert float(out["boxes"].max()) <= 64
    topk = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.0, topk_per_class=1))(
        logits, deltas, ANCHORS, (64, 64)
    )[0]
    assert sorted(topk["labels"].tolist()) == [0, 1]


def test_decoding_uses_the_box_coder():
    logits = _logits([[0.1, 0.9, 0.0001]] + [[0.99, 0.005, 0.005]] * 2)
    deltas = BoxCoder().encode(torch.tensor([[2.0, 2.0, 8.0, 9.0]]), ANCHORS[:1])
    deltas = torch.cat([deltas, torch.zeros(2, 4)]).unsqueeze(0)
    out = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.5))(
        logits, deltas, ANCHORS, (100, 100)
    )[0]
    assert out["boxes"][0].tolist() == pytest.approx([2, 2, 8, 9], abs=1e-4)


def test_empty_result_has_the_right_shapes():
    logits = _logits([[0.99, 0.005, 0.005]] * 3)
    out = SSDPostprocessor(options=PostprocessOptions(score_threshold=0.5))(
        logits, torch.zeros(1, 3, 4), ANCHORS, (100, 100)
    )[0]
    assert (
        out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="nms_iou"):
        PostprocessOptions(nms_iou=0)


def _unpruned_rule(
    post: SSDPostprocessor, logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor
) -> list[dict[str, torch.Tensor]]:
    """The rule before pruning, written out: per class top-k, threshold, class-wise NMS over
    every remaining candidate, cap."""
    from torchvision.ops import batched_nms, clip_boxes_to_image

    probs = torch.softmax(logits, dim=-1)[..., 1:]
    out = []
    for p, d in zip(probs, deltas, strict=True):
        boxes = clip_boxes_to_image(post.box_coder.decode(d, anchors), (320, 320))
        scores, idx = p.topk(min(post.options.topk_per_class, len(p)), dim=0)
        labels = torch.arange(p.shape[1]).expand_as(idx)
        scores, idx, labels = scores.flatten(), idx.flatten(), labels.flatten()
        keep = scores > post.options.score_threshold
        scores, idx, labels = scores[keep], idx[keep], labels[keep]
        keep = batched_nms(boxes[idx], scores, labels, post.options.nms_iou)[
            : post.options.max_detections
        ]
        out.append({"boxes": boxes[idx][keep], "scores": scores[keep], "labels": labels[keep]})
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruning_keeps_the_unpruned_rules_detections(seed: int) -> None:
    """80 classes on the 2034 anchors of a 320 input, logits from untrained-like (flat) to
    confident: the 1000-candidate budget keeps exactly the full rule's detections."""
    from heads.anchors import SSDAnchorGenerator

    g = torch.Generator().manual_seed(seed)
    anchors = SSDAnchorGenerator()((320, 320), [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)])
    num = anchors.shape[0]
    spread = [0.1, 2.0, 4.0][seed]  # flat, mixed, peaked class scores
    logits = torch.randn(2, num, 81, generator=g) * spread
    logits[..., 0] += 3.0  # mostly background, as a trained detector
    deltas = torch.randn(2, num, 4, generator=g) * 0.5
    post = SSDPostprocessor()
    assert post.options.topk_candidates == 1000
    got = post(logits, deltas, anchors, (320, 320))
    expected = _unpruned_rule(post, logits, deltas, anchors)
    for det, ref in zip(got, expected, strict=True):
        assert len(det["scores"]) == len(ref["scores"]) == post.options.max_detections
        _assert_same_detections(det, ref)


def _canonical(det: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rows (score, label, box) in one order: float32 softmax outputs of 160k pairs tie
    exactly now and then, and two NMS implementations may list tied rows either way."""
    rows = torch.cat([det["scores"][:, None], det["labels"][:, None].float(), det["boxes"]], 1)
    for col in reversed(range(rows.shape[1])):
        rows = rows[rows[:, col].argsort(stable=True, descending=col == 0)]
    return rows


def _assert_same_detections(det: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(det["scores"], ref["scores"], rtol=0, atol=0)  # sorted alike
    torch.testing.assert_close(_canonical(det), _canonical(ref), rtol=0, atol=0)


def test_no_budget_is_the_unpruned_rule_and_budget_is_checked() -> None:
    logits = torch.randn(1, 300, 6, generator=torch.Generator().manual_seed(0))
    deltas = torch.zeros(1, 300, 4)
    xy = torch.rand(300, 2, generator=torch.Generator().manual_seed(1)) * 280
    anchors = torch.cat([xy, xy + 40], 1)
    post = SSDPostprocessor(
        options=PostprocessOptions(topk_per_class=20, topk_candidates=None, max_detections=50)
    )
    (got,) = post(logits, deltas, anchors, (320, 320))
    (ref,) = _unpruned_rule(post, logits, deltas, anchors)
    assert len(ref["scores"]) > 0
    _assert_same_detections(got, ref)
    with pytest.raises(ValueError, match="topk_candidates must be None or >= max_detections"):
        PostprocessOptions(topk_candidates=10, max_detections=100)


def test_sigmoid_scores_are_per_class_and_the_exported_rule_agrees() -> None:
    """TF's SSD weights were trained with sigmoid scores: ``score_activation="sigmoid"``."""
    from heads.inference import DetectorEnd2End
    from heads.ssdlite import ssdlite_mobilenet_v2

    logits = torch.tensor([[[0.0, 2.0, 2.0]]])  # background, two classes alike
    soft = SSDPostprocessor(score_activation="softmax").class_scores(logits)
    sig = SSDPostprocessor(score_activation="sigmoid").class_scores(logits)
    torch.testing.assert_close(sig, torch.sigmoid(torch.tensor([[[2.0, 2.0]]])))
    assert float(soft.sum()) < 1 < float(sig.sum())  # sigmoid scores are not a distribution
    with pytest.raises(ValueError, match="score_activation must be 'softmax' or 'sigmoid'"):
        SSDPostprocessor(score_activation="tanh")

    torch.manual_seed(0)
    model = ssdlite_mobilenet_v2(4, width_mult=0.35, image_size=96,
                                 postprocess=PostprocessOptions(score_threshold=0.01),
                                 score_activation="sigmoid").eval()  # fmt: skip
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        cls_logits, _ = model.forward_raw(images)
        probs, _ = DetectorEnd2End(model, (96, 96)).candidates(images)
        detections = model(images)
    # The exported graph scores with the model's activation; so does eval forward.
    torch.testing.assert_close(probs, torch.sigmoid(cls_logits)[..., 1:])
    assert all(float(d["scores"].min()) > 0.45 for d in detections)  # softmax: ~0.2 here


def test_tf_detection_weights_use_sigmoid_until_their_predictors_are_replaced(tmp_path) -> None:
    from heads.pretrained import META_KEY, get_weights
    from heads.ssdlite import ssdlite_mobilenet_v2
    from tasks import DetectionTask

    assert get_weights("ssdlite_mobilenet_v2", "coco_tf").architecture["score_activation"] == (
        "sigmoid"
    )
    options = {"width_mult": 0.35, "padding": "tf", "score_activation": "sigmoid"}
    source = ssdlite_mobilenet_v2(5, image_size=96, **options)
    path = tmp_path / "converted.pt"
    meta = {"builder": "ssdlite_mobilenet_v2", "architecture": options}
    torch.save({"state_dict": source.state_dict(), META_KEY: meta}, path)
    as_is = ssdlite_mobilenet_v2(5, image_size=96, weights=path)
    assert as_is.postprocessor.score_activation == "sigmoid"
    finetuned = ssdlite_mobilenet_v2(3, image_size=96, weights=path)  # fresh predictors
    assert finetuned.postprocessor.score_activation == "softmax"
    task = DetectionTask(num_classes=5, image_size=96, weights=str(path))
    assert task.hparams["score_activation"] == "sigmoid"
    task.on_fit_start()  # training uses the softmax loss
    assert task.model.postprocessor.score_activation == "softmax"
    assert task.hparams["score_activation"] == "softmax"


@pytest.mark.parametrize("strong", [0, 7, 300])  # anchors sharing one high score (ties)
def test_pair_floor_never_cuts_one_of_the_k_best_pairs(strong: int) -> None:
    """The floor is the k-th best anchor's best score, and at most the k-th best pair's
    score: nothing of the top k is cut."""
    from heads.postprocess import pair_floor

    gen = torch.Generator().manual_seed(strong)
    probs = torch.softmax(torch.randn(2, 3000, 81, generator=gen) * 0.3, -1)[..., 1:]
    probs[1, :strong] = 0.9 / 80
    k = 1000
    floor = pair_floor(probs, k)
    kth_best = probs.reshape(2, -1).topk(k, dim=1).values[:, -1:]
    assert (floor <= kth_best).all()
    best_anchor_scores = probs.amax(-1).sort(dim=1, descending=True).values
    torch.testing.assert_close(floor, best_anchor_scores[:, k - 1 : k], rtol=0, atol=0)
    assert pair_floor(probs[:, :999], k) is None  # fewer anchors than k: no floor


@pytest.mark.parametrize("strong", [0, 7, 300])  # anchors sharing one high score (ties)
@pytest.mark.parametrize("k", [100, 1000, 5000])  # 5000: more than the anchors, no floor
def test_best_pairs_are_the_k_best_of_all_pairs(strong: int, k: int) -> None:
    """The exported graph's pruning (the k best anchors' rows, pairs below the floor
    masked) finds the same k best scores as one top-k over every pair, each with its own
    anchor and class."""
    from heads.inference import best_pairs

    gen = torch.Generator().manual_seed(strong)
    probs = torch.softmax(torch.randn(2, 3000, 81, generator=gen) * 0.3, -1)[..., 1:]
    probs[1, :strong] = 0.9 / 80
    scores, anchors, labels = best_pairs(probs, k)
    want = probs.reshape(2, -1).topk(min(k, probs[0].numel()), dim=1).values
    torch.testing.assert_close(scores, want, rtol=0, atol=0)
    for b in range(2):
        torch.testing.assert_close(probs[b, anchors[b], labels[b]], scores[b], rtol=0, atol=0)
        pairs = anchors[b] * 80 + labels[b]
        assert len(pairs.unique()) == len(pairs)  # k distinct pairs
    everything, _, _ = best_pairs(probs, None)
    assert everything.shape == (2, 3000 * 80)
