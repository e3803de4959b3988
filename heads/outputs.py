"""The named raw outputs of every model kind and the contract every zoo model keeps.

``forward_raw(images)`` is a model's whole network without post-processing, the part that is
traced for export and for the fast inference path. It returns one of the ``NamedTuple``s
below, so that a graph's outputs are named by the model itself: the exported files' output
names are these field names (followed by the graph's constants, e.g. the detector's
``anchors``), and one graph wrapper (``heads.inference.RawGraph``), one exporter and one
parity check serve every kind. Being tuples, they unpack as before:
``cls_logits, box_deltas = detector.forward_raw(images)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple, Protocol

from torch import Tensor


class ClassifierOutputs(NamedTuple):
    """``logits [B, K]``."""

    logits: Tensor


class SegmenterOutputs(NamedTuple):
    """``logits [B, K, H, W]`` at the input resolution."""

    logits: Tensor


class DetectorOutputs(NamedTuple):
    """``cls_logits [B, A, C + 1]`` (index 0: background), ``box_deltas [B, A, 4]``
    (encoded against the anchors)."""

    cls_logits: Tensor
    box_deltas: Tensor


class JointOutputs(NamedTuple):
    """``DetectorOutputs`` of the detection half and ``seg_logits [B, S, H, W]`` (input
    resolution) of the segmentation half."""

    cls_logits: Tensor
    box_deltas: Tensor
    seg_logits: Tensor


class ZooModel(Protocol):
    """What every model of ``heads`` offers besides ``forward``.

    Attributes:
        kind: ``"classifier"``, ``"detector"``, ``"segmenter"`` or ``"joint"`` (the kind its
            builder is registered with).
        raw_outputs: the ``NamedTuple`` type ``forward_raw`` returns.
    """

    kind: ClassVar[str]
    raw_outputs: ClassVar[type]

    def forward_raw(self, images: Tensor) -> Any:
        """``images [B, 3, H, W]`` -> a ``raw_outputs`` tuple."""
        ...

    def graph_constants(self, image_size: Sequence[int]) -> dict[str, Tensor]:
        """Tensors an exported graph of input size ``(H, W)`` returns after the raw outputs,
        fixed for that size (the detector's ``anchors [A, 4]``); ``{}`` for most kinds."""
        ...

    def postprocess_raw(self, raw: Any, image_size: Sequence[int]) -> Any:
        """What eval-mode ``forward`` returns, from ``forward_raw``'s outputs for inputs of
        ``image_size = (H, W)``."""
        ...
