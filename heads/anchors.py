"""SSD anchor (default box) generation: TF's ``ssd_anchor_generator`` and torchvision's layout.

Anchors are defined relative to the image (scales are fractions of the shorter image side,
centres sit on the feature-map grid) and returned in input pixels, so a model trained at
one size produces sensible anchors at any other size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

AnchorLayout = Literal["tf", "torchvision"]
ANCHOR_LAYOUTS: tuple[str, ...] = ("tf", "torchvision")


def linear_scales(num_maps: int, min_scale: float, max_scale: float) -> list[float]:
    """``num_maps`` scales from ``min_scale`` to ``max_scale``, then 1.0 appended (SSD eq. 4)."""
    if num_maps == 1:
        return [min_scale, 1.0]
    step = (max_scale - min_scale) / (num_maps - 1)
    return [min_scale + step * i for i in range(num_maps)] + [1.0]


def anchor_shapes(
    num_maps: int = 6,
    min_scale: float = 0.2,
    max_scale: float = 0.95,
    aspect_ratios: Sequence[float] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
    layout: AnchorLayout = "tf",
) -> list[list[tuple[float, float]]]:
    """Per feature map, the ``(scale, aspect_ratio)`` of each anchor at one grid location.

    ``layout="tf"`` is ``create_ssd_anchors`` of the TF Object Detection API with
    ``reduce_boxes_in_lowest_layer=True``: the first map gets ``(0.1, 1), (s0, 2), (s0, 1/2)``,
    every other map gets one anchor per aspect ratio at ``s_k`` plus a 1:1 anchor at
    ``sqrt(s_k * s_k+1)``. ``layout="torchvision"`` is torchvision's ``DefaultBoxGenerator``
    for SSDLite: 1:1 at ``s_k`` and ``sqrt(s_k * s_k+1)``, then 2, 1/2, 3, 1/3 on every map.

    Returns:
        ``num_maps`` lists of ``(scale, aspect_ratio)``; aspect ratio is width / height.
    """
    if layout not in ANCHOR_LAYOUTS:
        raise ValueError(f"anchor layout must be one of {ANCHOR_LAYOUTS}, got {layout!r}")
    if not 0 < min_scale <= max_scale <= 1:
        raise ValueError(
            f"need 0 < min_scale <= max_scale <= 1, got min_scale={min_scale}, max_scale={max_scale}"
        )
    scales = linear_scales(num_maps, min_scale, max_scale)
    shapes: list[list[tuple[float, float]]] = []
    for k in range(num_maps):
        s, s_next = scales[k], scales[k + 1]
        interpolated = math.sqrt(s * s_next)
        if layout == "tf":
            if k == 0:
                shapes.append([(0.1, 1.0), (s, 2.0), (s, 0.5)])
            else:
                shapes.append([(s, ar) for ar in aspect_ratios] + [(interpolated, 1.0)])
        else:
            shapes.append([(s, 1.0), (interpolated, 1.0), (s, 2.0), (s, 0.5), (s, 3.0), (s, 1 / 3)])
    return shapes


class SSDAnchorGenerator(nn.Module):
    """Anchors for a list of feature maps, in input pixels.

    Each anchor of scale ``s`` and aspect ratio ``a`` is ``s * sqrt(a) * min(H, W)`` wide
    and ``s / sqrt(a) * min(H, W)`` high (TF normalises to the shorter side so anchors
    keep their aspect ratio on non-square inputs), centred at ``((j + 0.5) W / w,
    (i + 0.5) H / h)`` for the cell ``(i, j)`` of an ``h x w`` map. TF leaves anchors
    unclipped; torchvision clips their size to the image (``clip=True``).

    Order: map by map, then row-major over the grid, then anchor by anchor, which is the
    order of a head output ``[B, A * K, h, w]`` permuted to ``[B, h, w, A, K]``.

    Args:
        num_maps: number of feature maps (6 for SSDLite).
        min_scale: scale of the first map (0.2).
        max_scale: scale of the last map (0.95).
        layout: ``"tf"`` (3 anchors on the first map, 6 elsewhere: 2034 at 320x320) or
            ``"torchvision"`` (6 everywhere: 3234 at 320x320).
        clip: clamp anchor sizes to the image (default: True for torchvision's layout only).
    """

    def __init__(
        self,
        num_maps: int = 6,
        min_scale: float = 0.2,
        max_scale: float = 0.95,
        layout: AnchorLayout = "tf",
        clip: bool | None = None,
    ) -> None:
        super().__init__()
        self.shapes = anchor_shapes(num_maps, min_scale, max_scale, layout=layout)
        self.layout = layout
        self.clip = layout == "torchvision" if clip is None else clip
        self._cache: dict[tuple, Tensor] = {}

    @property
    def num_anchors_per_location(self) -> list[int]:
        """Anchors per grid cell of each map, e.g. ``[3, 6, 6, 6, 6, 6]``."""
        return [len(s) for s in self.shapes]

    def _wh(self, k: int, short_side: float) -> Tensor:
        """``[num_anchors_k, 2]`` widths and heights of map ``k`` relative to the short side."""
        wh = torch.tensor(
            [(s * math.sqrt(a), s / math.sqrt(a)) for s, a in self.shapes[k]], dtype=torch.float64
        )
        if self.clip:
            wh = wh.clamp(max=1.0)
        return wh * short_side

    def forward(
        self,
        image_size: Sequence[int],
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Anchors for an image of ``image_size = (H, W)`` and maps of ``(h_k, w_k)``.

        Returns:
            ``[A, 4]`` boxes ``(x1, y1, x2, y2)`` in input pixels, ``A = sum_k h_k w_k n_k``.
        """
        height, width = int(image_size[0]), int(image_size[1])
        sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(sizes) != len(self.shapes):
            raise ValueError(f"expected {len(self.shapes)} feature maps, got {len(sizes)}")
        key = (height, width, sizes, device, dtype)
        if key not in self._cache:
            if len(self._cache) > 16:  # many input sizes (e.g. predict on raw sizes)
                self._cache.clear()
            self._cache[key] = self._generate(height, width, sizes).to(device=device, dtype=dtype)
        return self._cache[key]

    def _generate(self, height: int, width: int, sizes: Sequence[tuple[int, int]]) -> Tensor:
        short_side = float(min(height, width))
        per_map = []
        for k, (h, w) in enumerate(sizes):
            cy = (torch.arange(h, dtype=torch.float64) + 0.5) * (height / h)
            cx = (torch.arange(w, dtype=torch.float64) + 0.5) * (width / w)
            cy, cx = torch.meshgrid(cy, cx, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # [h*w, 1, 2]
            half = self._wh(k, short_side).unsqueeze(0) / 2  # [1, n, 2]
            boxes = torch.cat([centres - half, centres + half], dim=-1)  # [h*w, n, 4]
            per_map.append(boxes.reshape(-1, 4))
        return torch.cat(per_map).float()

    def num_anchors(self, feature_sizes: Sequence[Sequence[int]]) -> int:
        """Total number of anchors for the given feature-map sizes."""
        return sum(
            int(h) * int(w) * n
            for (h, w), n in zip(feature_sizes, self.num_anchors_per_location, strict=True)
        )


def best_anchor_iou(boxes: Tensor, anchors: Tensor, chunk: int = 4096) -> Tensor:
    """``[N]``: for each box of ``boxes`` ``[N, 4]`` the highest IoU with any of ``anchors``
    ``[A, 4]`` (both x1, y1, x2, y2 in the same pixels). A box whose best IoU is under the
    loss's ``iou_threshold`` is trained on that one anchor only (the forced match)."""
    best = [box_iou(part, anchors).amax(dim=1) for part in boxes.split(chunk)]
    return torch.cat(best) if best else boxes.new_zeros(0)
