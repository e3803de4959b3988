"""Which model to export: builder names, zoo checkpoints, model kinds, and test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch import Tensor, nn

import heads
from tasks.checkpoints.cost import check_checkpoint_state, check_model_cost
from tasks.checkpoints.hparams import check_hparams, saved_hparams, task_hparams
from tasks.checkpoints.io import CheckpointError, is_url, quote, read_checkpoint
from tasks.task_classes import registered_tasks

#: the kind of an exportable model (a bare backbone is not one)
ModelKind = Literal["classifier", "detector", "segmenter", "joint"]


def model_kind(model: nn.Module) -> ModelKind:
    """The kind a zoo model declares (``"classifier"``, ``"detector"``, ``"segmenter"`` or
    ``"joint"``).

    Raises:
        TypeError: not an exportable zoo model (named).
    """
    kind = heads.model_kind(model)
    if kind == "backbone":
        raise TypeError(f"cannot export a {type(model).__name__}: a backbone has no head")
    return kind  # type: ignore[return-value]


def exportable_models() -> list[str]:
    """The registered builders that export (every kind but bare backbones)."""
    return [n for n in heads.list_models() if heads.get_model_spec(n).kind != "backbone"]


def _task_class(class_path: str | None, state: dict[str, Tensor], source: Path) -> type:
    if class_path is not None:
        task_cls = registered_tasks().get(class_path)
        if task_cls is None:  # never imported: only the zoo's own tasks are rebuilt
            raise CheckpointError(
                f"{source} names the class {quote(class_path)}; export knows "
                f"{sorted({c.__name__ for c in registered_tasks().values()})}"
            )
        return task_cls
    from heads.weights_loader import builder_of

    builder = builder_of(
        {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    )
    # every zoo task names the builder of its model
    found = [t for t in registered_tasks().values() if getattr(t, "builder", None) == builder]
    if builder is None or not found:
        raise CheckpointError(f"{source}: cannot tell which zoo task saved this checkpoint")
    return found[0]


def load_checkpoint(path: str | Path) -> nn.Module:
    """The trained model (``task.model``, eval mode) of a zoo task's Lightning checkpoint.

    The file is untrusted, and checked as ``mobilezoo validate`` checks it
    (``tasks.checkpoints.io``): read with ``weights_only=True`` (no code runs), a URL
    downloaded and verified, non-finite weights refused, the task class one of the zoo's,
    the hyper-parameters type-checked and bounded. The task is rebuilt from them with its
    weight sources (``weights``, ``weights_backbone``, ...) set to ``None``: the checkpoint
    holds the trained weights, so nothing is downloaded.

    Raises:
        CheckpointError: (a ``ValueError``) naming the file and the problem.
    """
    ckpt, source = read_checkpoint(path), str(path)
    class_path, hparams = saved_hparams(ckpt, source)
    task_cls = _task_class(class_path, ckpt["state_dict"], Path(source))
    kwargs = task_hparams(task_cls, hparams, source)
    for key in task_cls.weights_hparams:
        if key in kwargs:
            kwargs[key] = None
    check_hparams(kwargs, f"checkpoint {source}")
    # what the values ask of the machine, and the weights against them, before reading
    cost = check_model_cost(task_cls, kwargs, f"checkpoint {source}")
    check_checkpoint_state(ckpt, cost, f"checkpoint {source}")
    task = task_cls(**kwargs)
    task.load_state_dict(ckpt["state_dict"])
    return task.model.eval()


def load_model(source: str | Path | nn.Module, builder_args: dict[str, Any] | None = None):
    """A model from a builder name (``exportable_models()``), a module as is, a task checkpoint, or
    any other weights file ``heads.weights_loader`` reads (a ``mobilezoo convert`` file, a
    model's state dict): its builder called with ``weights=<file>``, which builds the
    architecture the file records."""
    if isinstance(source, nn.Module):
        return source.eval()
    if str(source) in exportable_models():
        return heads.get_model(str(source), **(builder_args or {})).eval()
    if builder_args:
        raise ValueError("builder_args apply to builder names only, not to checkpoints")
    if is_url(source):
        return load_checkpoint(str(source))
    path = Path(source).expanduser()
    if path.suffix != ".ckpt" and path.is_file():
        from heads.weights_loader import open_weights

        found = open_weights(path)
        if found.kind != "checkpoint":
            return heads.get_model(found.builder, weights=str(path)).eval()
    if path.suffix != ".ckpt" and not path.is_file():
        raise ValueError(
            f"{source!r} is neither a builder name ({', '.join(exportable_models())}) nor a "
            ".ckpt file"
        )
    return load_checkpoint(path)


def images_from_data(data: LightningDataModule, count: int, image_size: tuple[int, int]) -> Tensor:
    """Up to ``count`` validation images ``[N, 3, H, W]`` of a data module, resized to
    ``image_size`` (bilinear) when they are not that size already."""
    data.prepare_data()
    data.setup("validate")
    out: list[Tensor] = []
    for batch in data.val_dataloader():
        if isinstance(batch, dict):
            images = batch["image"]
        elif isinstance(batch, list | tuple):
            images = batch[0]
        else:
            images = batch
        for image in images if isinstance(images, Tensor) else list(images):
            if tuple(image.shape[-2:]) != tuple(image_size):
                image = F.interpolate(image[None], size=image_size, mode="bilinear")[0]
            out.append(image.float())
            if len(out) == count:
                return torch.stack(out)
    if not out:
        raise ValueError(f"{type(data).__name__} has no validation images")
    return torch.stack(out)
