"""The fast inference path: BatchNorm folded into convolutions, channels-last tensors,
a frozen TorchScript graph with oneDNN fusions, ``torch.inference_mode``; and the graphs
that ONNX export traces (``RawGraph`` for every model kind, ``DetectorEnd2End`` for a
detector with its post-processing in the graph).

Folding rewrites ``y = BN(conv(x))`` as one convolution with scaled weights and a bias,
which removes a full read and write of every activation map. Channels-last (NHWC) is the
layout oneDNN's depthwise and 1x1 kernels run fastest in on a CPU. On top of that, the
network (``forward_raw``) is traced once per input shape, frozen (weights become constants)
and passed through ``torch.jit.optimize_for_inference``, which runs the convolutions as
oneDNN ops on prepacked weights and fuses the adds and ReLUs it can (ReLU6 stays a separate
clamp); the model's post-processing runs eagerly on the graph's outputs.
``benchmarks/latency.py`` measures what each step gives. Outputs equal the unfolded
model's up to float rounding.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops import batched_nms

from backbones.registry import model_kind

_BATCHNORM_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair of consecutive ``nn.Sequential`` items, in place.

    The convolution becomes a convolution with a bias carrying the BatchNorm's affine map
    and running statistics; the BatchNorm is replaced by ``nn.Identity`` so indices (and
    the convolutions' state-dict keys) stay where they were. Only valid for inference: the
    module is put in eval mode.

    Args:
        module: any module; its sub-modules are searched recursively.

    Returns:
        The number of BatchNorm layers folded.
    """
    module.eval()
    folded = 0
    for child in list(module.modules()):
        if not isinstance(child, nn.Sequential):
            continue
        for i in range(len(child) - 1):
            conv, bn = child[i], child[i + 1]
            if (
                type(conv) is nn.Conv2d
                and isinstance(bn, _BATCHNORM_TYPES)
                and bn.track_running_stats
                and conv.out_channels == bn.num_features
            ):
                child[i] = fuse_conv_bn_eval(conv, bn)
                child[i + 1] = nn.Identity()
                folded += 1
    return folded


def count_batchnorm(module: nn.Module) -> int:
    """Number of BatchNorm layers left in ``module`` (0 after a complete fold)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _to_channels_last(value: Any) -> Any:
    if isinstance(value, Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


class _RawOutputs(nn.Module):
    """A zoo model's network only (``forward_raw``, as a plain tuple): the part worth
    compiling."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.model.forward_raw(images))


#: input shapes compiled per model; beyond that, inputs run in eager mode
MAX_COMPILED_SHAPES = 4


class InferenceModel(nn.Module):
    """A model prepared by ``optimize_for_inference``; call it like the original.

    ``forward`` converts 4-D tensor arguments to channels-last and runs the wrapped model
    under ``torch.inference_mode`` (no autograd records, no version counters). With
    ``compiled``, a single image batch runs through a frozen TorchScript graph of the
    network (a zoo model's ``forward_raw``; any other model's ``forward``), traced on the
    first call with that input shape (at most ``MAX_COMPILED_SHAPES`` shapes, others run
    eagerly); the model's ``postprocess_raw`` (a detector's decoding and NMS) stays eager. Returned tensors are inference tensors: use them for reading, not as
    inputs to training. Attributes the wrapper lacks (e.g. a detector's ``forward_raw``
    or ``num_classes``) are looked up on the wrapped model; methods reached that way run
    eagerly without the wrapper's ``inference_mode``, so call them inside
    ``with torch.inference_mode():``.

    Attributes:
        model: the folded, channels-last, eval-mode model.
        folded: number of BatchNorm layers folded into convolutions.
        compiled: whether forward uses the frozen graphs.
    """

    def __init__(
        self, model: nn.Module, folded: int, channels_last: bool, compiled: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.folded = folded
        self.channels_last = channels_last
        self.compiled = compiled
        self._graphs: dict[tuple, Any] = {}  # input shape -> frozen graph (None: failed)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            args = tuple(_to_channels_last(a) for a in args)
            kwargs = {k: _to_channels_last(v) for k, v in kwargs.items()}
        graph = None
        if self.compiled and len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
            graph = self._graph(args[0])
        with torch.inference_mode():
            if graph is None:
                return self.model(*args, **kwargs)
            if not _is_zoo_model(self.model):
                return graph(args[0])
            raw = self.model.raw_outputs(*graph(args[0]))
            return self.model.postprocess_raw(raw, args[0].shape[-2:])

    def _graph(self, images: Tensor) -> Any:
        key = (tuple(images.shape), images.dtype, images.device, images.is_contiguous())
        if key not in self._graphs:
            if len(self._graphs) >= MAX_COMPILED_SHAPES or images.dim() != 4:
                return None
            self._graphs[key] = _freeze(self.model, images)
        return self._graphs[key]

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise RuntimeError(
                "an InferenceModel has its BatchNorm folded and cannot be trained; "
                "train the original model and call optimize_for_inference again"
            )
        return super().train(False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)


def _is_zoo_model(model: nn.Module) -> bool:
    """A model of ``heads`` (its class declares a kind), not a torchvision one."""
    try:
        return model_kind(model) != "backbone"
    except TypeError:
        return False


def _freeze(model: nn.Module, images: Tensor) -> Any:
    """The network traced on ``images``, frozen and optimized for oneDNN; ``None`` when
    tracing fails (the model then runs eagerly)."""
    net = _RawOutputs(model) if _is_zoo_model(model) else model
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python code
            example = images.detach().clone()  # a normal tensor, even if ``images`` is not
            traced = torch.jit.trace(net, example, check_trace=False)
            graph = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            for _ in range(2):  # TorchScript profiles the first runs, then optimizes
                graph(example)
            return graph
    except Exception:  # an unusual model: eager mode is always correct
        return None


def optimize_for_inference(
    model: nn.Module, channels_last: bool = True, inplace: bool = False, compiled: bool = True
) -> InferenceModel:
    """Return an eval-mode copy of ``model`` with BatchNorm folded, ready for fast inference.

    Works on any model of the zoo (classifier, SSDLite, DeepLabv3, the joint model) and on
    torchvision's MobileNets: every ``Conv2d -> BatchNorm2d`` pair inside an ``nn.Sequential`` is folded.

    Args:
        model: a trained model (it is not changed unless ``inplace``).
        channels_last: convert weights and inputs to the NHWC memory format.
        inplace: fold ``model`` itself instead of a deep copy (saves memory; ``model``
            can no longer be trained).
        compiled: run the network as a frozen TorchScript graph with oneDNN fusions
            (traced per input shape on first use; ``False``: eager folded model).

    Returns:
        An ``InferenceModel`` whose outputs equal ``model.eval()``'s within 1e-4.

    Example:
        >>> fast = optimize_for_inference(mobilenet_v2_classifier(num_classes=10))
        >>> fast(torch.randn(8, 3, 224, 224)).shape
        torch.Size([8, 10])
    """
    if isinstance(model, InferenceModel):
        return model
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    folded = fold_batchnorm(target)
    if channels_last:
        target = target.to(memory_format=torch.channels_last)
    for p in target.parameters():
        p.requires_grad_(False)
    return InferenceModel(target, folded, channels_last, compiled)


# -- graphs for export -------------------------------------------------------------------
class RawGraph(nn.Module):
    """A zoo model's raw network for export, of any kind: ``images [B, 3, H, W]`` -> the
    named tensors of ``model.forward_raw`` (``heads.outputs``), then the model's
    ``graph_constants`` of the fixed input size ``image_size = (H, W)`` (a detector's
    ``anchors [A, 4]``).

    Attributes:
        output_names: the graph's output names, in order (the exported file's).
        constant_names: those of the constants (no batch dimension).

    Raises:
        TypeError: ``model`` is not a zoo model of ``heads`` (or is a bare backbone).
    """

    def __init__(self, model: nn.Module, image_size: Sequence[int]) -> None:
        super().__init__()
        if not _is_zoo_model(model):
            raise TypeError(
                f"RawGraph wraps a zoo model (classifier, detector, segmenter or joint), got "
                f"a {type(model).__name__}"
            )
        self.model = model
        constants = model.graph_constants(tuple(image_size))
        for name, value in constants.items():
            self.register_buffer(name, value, persistent=False)
        self.constant_names = tuple(constants)
        self.output_names = (*model.raw_outputs._fields, *self.constant_names)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        # Computed copies: the tracer refuses a bare buffer as a graph output.
        constants = tuple(getattr(self, name).clone() for name in self.constant_names)
        return (*self.model.forward_raw(images), *constants)


class _ClassWiseNMS(torch.autograd.Function):
    """Class-wise NMS of per-image candidates: ``boxes [B, k, 4]``, ``scores [B, C, k]``
    (a candidate's score in its class row, 0 elsewhere) -> ``[S, 3]`` int64 rows
    ``(image, class, candidate)`` of the kept boxes.

    Exported as one ONNX ``NonMaxSuppression`` (its native batch/class layout), which
    onnxruntime and OpenVINO run as NMS per (image, class) over the few candidates scoring
    above the threshold in that class.
    """

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, iou: float, threshold: float) -> Tensor:
        num_classes = scores.shape[1]
        image, label, cand = torch.nonzero(scores > threshold, as_tuple=True)
        keep = batched_nms(
            boxes[image, cand], scores[image, label, cand], image * num_classes + label, iou
        )
        return torch.stack([image[keep], label[keep], cand[keep]], dim=1)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, iou: float, threshold: float) -> Any:
        def const(value: Any, dtype: torch.dtype) -> Any:
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            const(2**31 - 1, torch.int64),
            const(iou, torch.float32),
            const(threshold, torch.float32),
        )


def rank_within_group(groups: Tensor, num_groups: int) -> Tensor:
    """``groups [B, n]`` (int64 in ``0..num_groups-1``) of candidates in score order -> each
    one's rank among the candidates of its group (0 = the group's best), in
    ``O(n + num_groups)`` per row: candidates are grouped with their order kept (sorting the
    exact integer key ``group * n + position``), then a rank is the position minus where
    its group starts."""
    batch, n = groups.shape
    position = torch.arange(n).expand(batch, n)
    order = (groups * n + position).argsort(dim=1)  # grouped, order kept
    counts = torch.zeros(batch, num_groups, dtype=torch.long).scatter_add(
        1, groups, torch.ones_like(groups)
    )
    start = counts.cumsum(1) - counts  # first position of each group
    rank_sorted = position - start.gather(1, groups.gather(1, order))
    return torch.empty_like(groups).scatter(1, order, rank_sorted)


def best_pairs(probs: Tensor, k: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best (anchor, class) pairs of each image, best first: ``probs [B, A, K]``
    -> ``scores``, ``anchor_idx``, ``labels``, each ``[B, k]`` (all ``A * K`` pairs when
    ``k`` is ``None`` or larger).

    The same pairs as one top-k over all ``A * K`` scores (up to the order of equal
    scores), found in fewer steps: every one of the ``k`` best pairs reaches the ``k``-th
    best anchor's best score (``heads.postprocess.pair_floor``), so it lies in the row of
    one of the ``k`` best anchors; the top-k runs over those rows, with the pairs below that
    floor set to 0 (a score of 0 never passes the threshold, so which of them fill a tie
    does not matter). A runtime's heap top-k pays for every pair that enters the heap, so
    fewer pairs make it cheaper.
    """
    batch, num_anchors, num_classes = probs.shape
    k = num_anchors * num_classes if k is None else min(k, num_anchors * num_classes)
    if k >= num_anchors:  # every anchor may hold one of the k best pairs
        scores, idx = probs.reshape(batch, -1).topk(k, dim=1)
        return scores, idx // num_classes, idx % num_classes
    best, anchors = probs.amax(dim=2).topk(k, dim=1)  # [B, k]: the k best anchors
    # Their rows [B, k, K], taken as whole rows of [B * A, K] (a cheaper gather in runtimes).
    flat_idx = (anchors + torch.arange(batch).unsqueeze(1) * num_anchors).flatten()
    rows = probs.reshape(-1, num_classes).index_select(0, flat_idx).reshape(batch, k, -1)
    rows = rows * (rows >= best[:, -1:, None])  # 0 below the floor (a where is slower)
    scores, idx = rows.reshape(batch, -1).topk(k, dim=1)
    return scores, anchors.gather(1, idx // num_classes), idx % num_classes


class DetectorEnd2End(RawGraph):
    """SSDLite with ``SSDPostprocessor``'s rule in batched, exportable form.

    Same rule as the model's eval forward: softmax (or sigmoid); the ``topk_candidates`` best
    (anchor, class) pairs of each image above the score threshold, at most
    ``topk_per_class`` per class; only those decoded; class-wise NMS; ``max_detections``
    per image by score.

    Forward: ``images [B, 3, H, W]`` -> ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``
    (int64, ``0..K-1``), ``batch_index [D]`` (int64); image by image, score-descending
    within each.
    """

    def __init__(self, model: nn.Module, image_size: Sequence[int]) -> None:
        super().__init__(model, image_size)
        if model_kind(model) != "detector":
            raise TypeError(f"DetectorEnd2End wraps a detector, got a {type(model).__name__}")
        self.output_names = ("boxes", "scores", "labels", "batch_index")
        self.constant_names = ()

    def candidates(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Every anchor's class probabilities ``[B, A, K]`` and decoded box ``[B, A, 4]``
        (clipped to the image), before any threshold, top-k or NMS."""
        cls_logits, box_deltas = self.model.forward_raw(images)
        probs = self.model.postprocessor.class_scores(cls_logits)
        return probs, self._boxes(box_deltas, self.anchors, images.shape[-2:])

    def _boxes(self, deltas: Tensor, anchors: Tensor, image_size: Any) -> Tensor:
        height, width = image_size
        boxes = self.model.postprocessor.box_coder.decode(deltas, anchors)
        size = torch.tensor([width, height, width, height], dtype=boxes.dtype)
        return torch.minimum(boxes.clamp(min=0), size)  # clipped to the image

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        post = self.model.postprocessor
        opts = post.options
        cls_logits, box_deltas = self.model.forward_raw(images)
        probs = post.class_scores(cls_logits)  # [B, A, K]
        batch, _, num_classes = probs.shape
        scores, anchor_idx, labels = best_pairs(probs, opts.topk_candidates)  # [B, k]
        rank = rank_within_group(labels, num_classes)
        scores = torch.where(rank < opts.topk_per_class, scores, torch.zeros_like(scores))
        deltas = box_deltas.gather(1, anchor_idx.unsqueeze(-1).expand(-1, -1, 4))
        cand = self._boxes(deltas, self.anchors[anchor_idx], images.shape[-2:])  # [B, k, 4]
        # Each candidate's score in its class row, 0 in the others: [B, K, k].
        class_scores = scores.new_zeros(batch, num_classes, scores.shape[1]).scatter(
            1, labels.unsqueeze(1), scores.unsqueeze(1)
        )
        sel = _ClassWiseNMS.apply(cand, class_scores, opts.nms_iou, opts.score_threshold)
        # Candidates are in score order, so the kept ones in (image, candidate) order are
        # score-descending within each image, and a running count caps them per image.
        kept = torch.zeros_like(scores).index_put((sel[:, 0], sel[:, 2]), torch.ones(()))
        kept = (kept > 0) & (kept.cumsum(1) <= opts.max_detections)
        image, box = torch.nonzero(kept, as_tuple=True)
        return cand[image, box], scores[image, box], labels[image, box], image
