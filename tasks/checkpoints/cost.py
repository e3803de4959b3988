"""What a checkpoint (or a config) asks of the machine, bounded before anything is allocated.

Each hyper-parameter within its bounds can still ask for an absurd model in combination
(``num_classes=30000`` with ``width_mult=4``), and some only act through others
(``divisible_by=100000`` rounds every layer to 100,000 channels). So the cost is counted,
not guessed: the task is built on PyTorch's ``meta`` device (shapes, no memory), its
parameters and buffers are summed, and one training-mode forward pass of one image at the
model's size sums the activations that autograd would keep. A checkpoint's tensors are
then compared with that expected state dict before any of them is read: the file is
mapped (``torch.load(mmap=True)``), so a tensor that does not belong costs no memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tasks.checkpoints.io import CheckpointError, check_finite, quote, shorten

#: default of ``MOBILEZOO_MAX_MODEL_GIB``: largest parameters + buffers, and largest
#: activations of one image, in GiB (the zoo's largest recipe needs well under 1)
DEFAULT_MAX_GIB = 4.0
#: input side used to count activations of a model without an ``image_size`` (segmenter)
_NOMINAL_SIZE = {"SegmentationTask": 513, "ClassificationTask": 224}
#: the optimizer may keep a few copies of the weights (SGD momentum 1, Adam 2)
_STATE_COPIES = 4
_SLACK_BYTES = 64 * 2**20


def max_model_bytes() -> int:
    """``MOBILEZOO_MAX_MODEL_GIB`` (default ``DEFAULT_MAX_GIB``) in bytes."""
    text = os.environ.get("MOBILEZOO_MAX_MODEL_GIB", "")
    try:
        gib = float(text) if text else DEFAULT_MAX_GIB
    except ValueError:
        raise CheckpointError(f"MOBILEZOO_MAX_MODEL_GIB={quote(text)} is not a number") from None
    return int(gib * 2**30)


@dataclass
class ModelCost:
    """The expected state dict (name -> shape) and the bytes a task needs."""

    state: dict[str, tuple[tuple[int, ...], torch.dtype]]
    weight_bytes: int
    activation_bytes: int
    image_side: int


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _tensors(value: Any) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _activation_bytes(model: nn.Module, side: int) -> int:
    """Bytes of every leaf module's outputs in a forward pass of one ``side`` image."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        total += sum(t.numel() * t.element_size() for t in _tensors(output))

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        # Evaluation mode (BatchNorm's training pass is slow on meta tensors); the raw
        # outputs of a detector, as training computes them
        forward = getattr(model, "forward_outputs", model)
        with torch.no_grad():
            forward(torch.empty(1, 3, side, side, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total


def model_cost(task_cls: type, kwargs: dict[str, Any]) -> ModelCost:
    """Build ``task_cls(**kwargs)`` on the meta device (weight sources set to ``None``:
    nothing is read or downloaded) and count what it needs."""
    args = {k: v for k, v in kwargs.items() if k not in ("optimizer", "lr_scheduler")}
    for name in getattr(task_cls, "weights_hparams", ()):
        if name in args:
            args[name] = None
    with torch.device("meta"):
        task = task_cls(**args)
    state = task.state_dict()
    weight_bytes = sum(t.numel() * t.element_size() for t in state.values())
    side = int(args.get("image_size") or _NOMINAL_SIZE.get(task_cls.__name__, 320))
    model = getattr(task, "model", task)
    model.eval()
    return ModelCost(
        state={k: (tuple(v.shape), v.dtype) for k, v in state.items()},
        weight_bytes=weight_bytes,
        activation_bytes=_activation_bytes(model, side),
        image_side=side,
    )


_COSTS: dict[tuple[type, str], ModelCost] = {}


def check_model_cost(task_cls: type, kwargs: dict[str, Any], source: str) -> ModelCost:
    """``model_cost``, or ``CheckpointError`` naming ``source`` and the architecture values
    when the weights or one image's activations exceed ``max_model_bytes()``."""
    key = (task_cls, repr(sorted(kwargs.items())))
    try:
        cost = _COSTS[key] if key in _COSTS else model_cost(task_cls, kwargs)
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, ZeroDivisionError) as err:
        raise CheckpointError(
            f"{source}: its hyper-parameters do not build a {task_cls.__name__}: "
            f"{shorten(str(err) or type(err).__name__)}"
        ) from None
    if len(_COSTS) >= 8:
        _COSTS.clear()
    _COSTS[key] = cost  # one architecture is often checked again (many checkpoints of a run)
    limit = max_model_bytes()
    if cost.weight_bytes > limit or cost.activation_bytes > limit:
        asked = ", ".join(
            f"{k}={quote(kwargs[k], 24)}"
            for k in getattr(task_cls, "architecture_hparams", ())
            if kwargs.get(k) is not None
        )
        raise CheckpointError(
            f"{source} asks for a {task_cls.__name__} with {asked}: "
            f"{_gib(cost.weight_bytes)} of weights and {_gib(cost.activation_bytes)} of "
            f"activations per {cost.image_side}x{cost.image_side} image, more than the "
            f"{_gib(limit)} allowed (set MOBILEZOO_MAX_MODEL_GIB to allow more)"
        )
    return cost


def _storage_bytes(tree: Any, budget: int = 1_000_000) -> int:
    """Bytes of the distinct storages of the tensors in ``tree`` (mapped, not read)."""
    seen: dict[int, int] = {}
    stack, visited = [tree], 0
    while stack and visited < budget:
        node, visited = stack.pop(), visited + 1
        if isinstance(node, Tensor):
            storage = node.untyped_storage()
            seen[storage.data_ptr() or id(storage)] = storage.nbytes()
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return sum(seen.values())


def check_checkpoint_state(ckpt: dict[str, Any], cost: ModelCost, source: str) -> None:
    """Compare a (mapped) checkpoint with the model its hyper-parameters describe before
    reading its tensors: the same names and shapes, and no more tensor data in the whole
    file than the weights and a few optimizer copies of them; then refuse non-finite
    weights. Raises ``CheckpointError`` naming ``source`` and the first difference."""
    state = ckpt["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state_dict entry {quote(bad[0])} is not a tensor")
    unexpected = [k for k in state if k not in cost.state]
    missing = [k for k in cost.state if k not in state]
    if unexpected or missing:
        which = (f"unexpected tensors {', '.join(quote(k, 60) for k in unexpected[:2])}"
                 if unexpected else f"missing tensors {', '.join(missing[:2])}")  # fmt: skip
        raise CheckpointError(f"{source}: the weights do not fit the model its hyper-"
                              f"parameters describe: {which} ({len(unexpected)} unexpected, "
                              f"{len(missing)} missing)")  # fmt: skip
    for name, tensor in state.items():
        shape, dtype = cost.state[name]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {quote(name, 60)} has shape {quote(tuple(tensor.shape), 60)}"
                f", the model its hyper-parameters describe has {shape}"
            )
        # float weights may be saved in another float precision; nothing else converts
        # without loss (complex parts, integers, sparse layouts)
        if (
            tensor.layout != torch.strided
            or tensor.dtype.is_complex
            or tensor.dtype.is_floating_point != dtype.is_floating_point
        ):
            raise CheckpointError(
                f"{source}: tensor {quote(name, 60)} is {tensor.dtype} ({tensor.layout}), "
                f"the model's is {dtype}"
            )
    stored = _storage_bytes(ckpt)
    allowed = _STATE_COPIES * cost.weight_bytes + _SLACK_BYTES
    if stored > allowed:
        raise CheckpointError(
            f"{source} holds {stored / 2**20:.0f} MiB of tensor data for a model of "
            f"{cost.weight_bytes / 2**20:.0f} MiB (at most {allowed / 2**20:.0f} MiB with "
            "optimizer state); refused before reading it"
        )
    check_finite(state, source)
