"""Anchors: counts, values at known positions, torchvision's layout equals torchvision."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from heads.anchors import SSDAnchorGenerator, anchor_shapes, linear_scales

SIZES_320 = [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


def test_linear_scales_match_tf():
    assert linear_scales(6, 0.2, 0.95) == pytest.approx([0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 1.0])


@pytest.mark.parametrize(("layout", "count"), [("tf", 2034), ("torchvision", 3234)])
def test_anchor_count_at_320(layout, count):
    gen = SSDAnchorGenerator(layout=layout)
    anchors = gen((320, 320), SIZES_320)
    assert anchors.shape == (count, 4)
    assert gen.num_anchors(SIZES_320) == count


def test_tf_first_map_has_three_reduced_anchors():
    shapes = anchor_shapes(layout="tf")
    assert shapes[0] == [(0.1, 1.0), (0.2, 2.0), (0.2, 0.5)]
    assert [len(s) for s in shapes] == [3, 6, 6, 6, 6, 6]
    # last map: 0.95 at ratios 1, 2, 1/2, 3, 1/3 and the interpolated sqrt(0.95 * 1.0)
    assert shapes[5][-1] == (pytest.approx(math.sqrt(0.95)), 1.0)


def test_tf_anchor_values_at_known_positions():
    anchors = SSDAnchorGenerator(layout="tf")((320, 320), SIZES_320)
    # map 0, cell (0, 0): centre (8, 8); scale 0.1 -> 32 px square
    assert anchors[0].tolist() == pytest.approx([-8, -8, 24, 24])
    # map 0, cell (0, 0), scale 0.2 ratio 2: w = 64 sqrt(2), h = 64 / sqrt(2)
    w, h = 64 * math.sqrt(2), 64 / math.sqrt(2)
    assert anchors[1].tolist() == pytest.approx([8 - w / 2, 8 - h / 2, 8 + w / 2, 8 + h / 2])
    # map 0, cell (0, 1) starts at index 3 with centre (24, 8)
    assert anchors[3].tolist() == pytest.approx([8, -8, 40, 24])
    # map 1 (10x10, 32 px cells) starts at 1200; cell (0, 0) scale 0.35 -> 112 px
    assert anchors[1200].tolist() == pytest.approx([-40, -40, 72, 72])
    # its interpolated anchor: sqrt(0.35 * 0.5) * 320
    side = math.sqrt(0.35 * 0.5) * 320
    assert anchors[1205].tolist() == pytest.approx([16 - side / 2] * 2 + [16 + side / 2] * 2)
    # last map, the single 0.95 anchor in the centre: 304 px
    assert anchors[2028].tolist() == pytest.approx([8, 8, 312, 312])


def test_non_square_anchors_use_the_short_side():
    anchors = SSDAnchorGenerator(layout="tf")((200, 400), [(2, 4)] + [(1, 1)] * 5)
    first = anchors[0]
    # scale 0.1 of the short side (200) = 20 px square, centred in the 100x100 cell
    assert first.tolist() == pytest.approx([40, 40, 60, 60])


@pytest.mark.parametrize("size", [320, 160])
def test_torchvision_layout_equals_torchvision(size):
    maps = [
        (math.ceil(size / 16), math.ceil(size / 16)),
        (math.ceil(size / 32), math.ceil(size / 32)),
    ]
    for _ in range(4):
        maps.append((math.ceil(maps[-1][0] / 2),) * 2)
    ours = SSDAnchorGenerator(layout="torchvision")((size, size), maps)
    ref_gen = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    images = ImageList(torch.zeros(1, 3, size, size), [(size, size)])
    features = [torch.zeros(1, 1, h, w) for h, w in maps]
    ref = ref_gen(images, features)[0]
    torch.testing.assert_close(ours, ref, atol=1e-3, rtol=0)


def test_bad_layout_names_the_choices():
    with pytest.raises(ValueError, match="tf.*torchvision.*got 'ssd'"):
        SSDAnchorGenerator(layout="ssd")  # type: ignore[arg-type]
