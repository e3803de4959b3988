"""Box coding round trip (and equality with torchvision) and anchor matching by hand."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

from heads.box_coder import BoxCoder, match_anchors


def _random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator) * 200
    wh = torch.rand(n, 2, generator=generator) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_encode_decode_round_trip():
    g = torch.Generator().manual_seed(0)
    boxes, anchors = _random_boxes(50, g), _random_boxes(50, g)
    coder = BoxCoder()
    decoded = coder.decode(coder.encode(boxes, anchors), anchors)
    torch.testing.assert_close(decoded, boxes, atol=1e-4, rtol=1e-5)


def test_encode_matches_torchvision_and_hand_values():
    g = torch.Generator().manual_seed(1)
    boxes, anchors = _random_boxes(20, g), _random_boxes(20, g)
    ours = BoxCoder((10, 10, 5, 5)).encode(boxes, anchors)
    ref = TVBoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode_single(boxes, anchors)
    torch.testing.assert_close(ours, ref)
    # centre shifted by half the anchor width, twice as tall: (10 * 0.5, 0, 0, 5 * log 2)
    code = BoxCoder().encode(
        torch.tensor([[5.0, -5.0, 15.0, 15.0]]), torch.tensor([[0.0, 0, 10, 10]])
    )
    assert code[0].tolist() == pytest.approx(
        [5.0, 0.0, 0.0, 5 * torch.log(torch.tensor(2.0)).item()]
    )


def test_bad_scales():
    with pytest.raises(ValueError, match="four positive"):
        BoxCoder((10, 10, 5))


ANCHORS = torch.tensor(
    [[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], dtype=torch.float32
)


def test_matching_by_hand():
    gt = torch.tensor([[0, 0, 10, 10], [12, 12, 20, 20]], dtype=torch.float32)
    # IoUs: box 0 / anchor 0 = 1.0; box 1 / anchor 3 = 64 / 100 = 0.64; all others < 0.5
    assert match_anchors(gt, ANCHORS).tolist() == [0, -1, -1, 1]


def test_force_match_gives_every_box_an_anchor():
    gt = torch.tensor([[11, 11, 25, 25]], dtype=torch.float32)  # IoU with anchor 3 = 81/215
    assert match_anchors(gt, ANCHORS, force_match=False).tolist() == [-1, -1, -1, -1]
    assert match_anchors(gt, ANCHORS).tolist() == [-1, -1, -1, 0]


def test_force_match_conflict_first_box_wins():
    # both boxes have anchor 0 as their best anchor; the second one is below threshold
    gt = torch.tensor([[0, 0, 10, 10], [4, 4, 14, 14]], dtype=torch.float32)
    assert match_anchors(gt, ANCHORS).tolist() == [0, -1, -1, -1]
    swapped = gt.flip(0)
    assert match_anchors(swapped, ANCHORS).tolist() == [0, -1, -1, -1]


def test_image_without_boxes_is_all_background():
    assert match_anchors(torch.zeros(0, 4), ANCHORS).tolist() == [-1, -1, -1, -1]
