"""``BaseTask``: the template every task follows.

The base class holds the steps every task shares: the optimizer and LR schedule from the
config (its ``__init__`` arguments, which a task passes on through ``**kwargs``: the typed
signatures of both together are the config schema), parameter groups, the model built from
a builder with the architecture its weights need, the checks of the data against the task
at ``setup``, the checkpoint hooks (no non-finite state saved or loaded, the RNG state, the
input normalization), and the fast predict path. A task supplies its model, loss, steps and
metrics, and the hooks ``setup_data`` and ``args_from_data``."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from tasks.checkpoints.io import check_finite
from tasks.checkpoints.model_checkpoint import checked_callback_state
from tasks.config_limits import ConfigError
from tasks.schedulers import WarmupExponentialLR, _WarmupSchedule

_Group = TypeVar("_Group")
_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def option_group(cls: type[_Group], value: _Group | Mapping[str, Any]) -> _Group:
    """``value`` as the frozen option group ``cls`` (``heads.PostprocessOptions``, ...).

    A task's checkpoint saves each group as its dict (``BaseTask.__init__``), and code that
    rebuilds a task from a checkpoint's hyper-parameters (``tasks.export.load_checkpoint``)
    passes that dict back; the config parser builds the group itself.
    """
    return value if isinstance(value, cls) else cls(**value)


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=4e-5)


class BaseTask(LightningModule):
    """Base LightningModule of the zoo.

    A task's ``__init__`` takes its own arguments and ``**kwargs``, which it passes to
    ``super().__init__``: these are the arguments below, shared by every task.

    Args:
        optimizer: optimizer class and its arguments from the YAML (``class_path`` /
            ``init_args``), called with the parameter groups. Default: SGD, lr 0.01,
            momentum 0.9, weight decay 4e-5.
        lr_scheduler: LR scheduler class and arguments, called with the optimizer. The
            schedules of ``tasks.schedulers`` fill ``total_steps=None`` with the run's
            number of optimizer steps. ``None``: constant learning rate.
        lr_scheduler_interval: step the scheduler every optimizer ``"step"`` or every
            ``"epoch"``.
        decay_norm_and_bias: apply weight decay to BatchNorm parameters and biases too
            (TF-slim decays conv and linear weights only, the default here).
        freeze_backbone_steps: the backbone (``model.backbone``) takes no update for this
            many optimizer steps, while the layers that start fresh (extra layers, heads)
            settle: their first, large and random gradients then do not reach the
            pretrained features ("linear probing, then fine-tuning"). Its BatchNorm
            statistics still follow the data. 0: from the first step.
    """

    #: ``__init__`` arguments that define the weights' shapes: a checkpoint's values win
    architecture_hparams: tuple[str, ...] = ()
    #: ``__init__`` arguments of evaluation only: the command line wins over a checkpoint
    evaluation_hparams: tuple[str, ...] = ()
    #: ``__init__`` arguments naming weights to load: ``None`` when a checkpoint is loaded
    weights_hparams: tuple[str, ...] = ("weights", "weights_backbone")
    #: names of ``__init__`` arguments that are not saved as hyper-parameters
    _hparams_ignore: tuple[str, ...] = ("optimizer", "lr_scheduler")
    #: ``(task attribute, data module attribute)`` pairs that must be equal: ``setup``
    #: raises a one-line ``ConfigError`` naming both values when the data has the attribute
    data_agreement: tuple[tuple[str, str], ...] = (("num_classes", "num_classes"),)

    def __init__(
        self,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        decay_norm_and_bias: bool = False,
        freeze_backbone_steps: int = 0,
    ) -> None:
        super().__init__()
        if freeze_backbone_steps < 0:
            raise ConfigError(f"freeze_backbone_steps must be >= 0, got {freeze_backbone_steps}")
        # Only plain values go into checkpoints, so they load with weights_only=True: an
        # option group (a frozen dataclass such as ``PostprocessOptions``) is saved as its
        # dict, which the config parser turns back into the group.
        self.save_hyperparameters(ignore=list(self._hparams_ignore))
        for name, value in list(self.hparams.items()):
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                self.hparams[name] = dataclasses.asdict(value)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.decay_norm_and_bias = decay_norm_and_bias
        self.freeze_backbone_steps = freeze_backbone_steps

    @classmethod
    def args_from_data(cls, data_args: Mapping[str, Any]) -> dict[str, Any]:
        """The ``__init__`` arguments that follow from the data module's ``init_args``.

        The ``mobilezoo`` command sets them where the user gave no value for them, so that a
        config states the class count and the detectors' input size once, in its ``data:``
        section (where the data module takes them as arguments: the generated demo sets'
        class count, every detection data module's ``image_size``). A value the user gives
        stays and ``setup`` compares it with the data (``data_agreement``); so does a count
        the data module reads from its files (COCO categories, class folders).

        Args:
            data_args: the data section's ``init_args`` (values as parsed, not built).

        Returns:
            ``{argument: value}``: each ``data_agreement`` pair's task argument whose data
            attribute is also a data module argument, with the data's value.
        """
        return {
            ours: data_args[theirs]
            for ours, theirs in cls.data_agreement
            if data_args.get(theirs) is not None
        }

    def build_model(
        self,
        builder: Callable[..., nn.Module],
        weights: str | None,
        weights_backbone: str | None,
        architecture: Mapping[str, Any],
        **options: Any,
    ) -> nn.Module:
        """``builder(weights=..., weights_backbone=..., **architecture, **options)`` with the
        architecture values resolved for the weights (``resolve_architecture``: ``None``
        means "what the weights need, else the builder's default"; the values used are
        recorded as hyper-parameters). ``options`` go to the builder as given."""
        arch = self.resolve_architecture(builder, weights, weights_backbone, **architecture)
        return builder(weights=weights, weights_backbone=weights_backbone, **arch, **options)

    def resolve_architecture(
        self,
        builder: Callable[..., Any],
        weights: str | None,
        weights_backbone: str | None = None,
        **given: Any,
    ) -> dict[str, Any]:
        """The builder's architecture options for the weights, recorded as hyper-parameters.

        ``given`` maps option names to the task's values, ``None`` meaning "what the
        weights need, else the builder's default". Weights (a named entry, a converted
        file, a checkpoint: ``heads.weights_loader``) decide ``width_mult``,
        ``divisible_by``, ``padding``, ...; ``weights_backbone`` the backbone's options.
        The resolved values go into ``self.hparams``, so a checkpoint rebuilds exactly this
        architecture without the weights (``padding="tf"`` and ``"torch"`` have the same
        shapes: a checkpoint that forgot it would load and give other numbers).
        """
        from heads.weights_loader import architecture_of

        defaults = {
            name: p.default
            for name, p in inspect.signature(builder).parameters.items()
            if name in given
        }
        resolved = architecture_of(builder, weights, weights_backbone, **given)
        resolved = {k: defaults[k] if v is None else v for k, v in resolved.items()}
        self.hparams.update(resolved)
        return resolved

    # -- the data --------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self._trainer else None
        if data is not None:
            self.setup_data(data, stage)

    def setup_data(self, data: Any, stage: str) -> None:
        """Hook of ``setup`` when the trainer has a data module: check it against the task
        and read what the task takes from it (class names, ground truth). The base checks
        ``data_agreement``; a task that overrides this calls ``super().setup_data``."""
        self.check_data(data)

    def check_data(self, data: Any) -> None:
        """Raise ``ConfigError`` (one line, the CLI exits 2) when an attribute of ``data``
        named in ``data_agreement`` differs from the task's."""
        for ours, attr in self.data_agreement:
            theirs, mine = getattr(data, attr, None), getattr(self, ours)
            if theirs is None or theirs == mine:
                continue
            if ours == attr == "num_classes":
                raise ConfigError(f"model.num_classes={mine} but the data has {theirs} classes")
            raise ConfigError(
                f"model.{ours}={mine} but data.{attr}={theirs}; set both to the same value"
            )

    # -- checkpoints -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A backstop for any checkpoint callback: tasks.ModelCheckpoint skips such states.
        check_finite(
            {k: checkpoint.get(k) for k in ("state_dict", "optimizer_states")},
            f"not checkpointed: the state at global step {checkpoint.get('global_step')}",
        )
        # With the data order kept by the data module, the RNG state is all a resumed run
        # needs to replay dropout exactly.
        checkpoint["torch_rng_state"] = torch.get_rng_state()
        # The input normalization the run trained with: an export records it, so that the
        # exported file can be fed raw images (tasks.export.metadata)
        data = self._trainer.datamodule if self._trainer is not None else None
        mean, std = getattr(data, "mean", None), getattr(data, "std", None)
        if mean is not None and std is not None:
            checkpoint["normalization"] = {
                "mean": list(map(float, mean)),
                "std": list(map(float, std)),
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite(checkpoint.get("state_dict", {}), "the checkpoint being loaded")
        self._check_callback_states(checkpoint)
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])

    def _check_callback_states(self, checkpoint: dict[str, Any]) -> None:
        """Replace, before the trainer restores them, the states of checkpoint callbacks
        (Lightning's own ``ModelCheckpoint`` included) that name files outside the
        callback's folder: the callback would delete them (see ``checked_callback_state``)."""
        states = checkpoint.get("callbacks")
        if not isinstance(states, dict) or self._trainer is None:
            return
        for callback in self.trainer.checkpoint_callbacks:
            if not isinstance(callback, ModelCheckpoint):
                continue
            for key in (callback.state_key, callback._legacy_state_key):
                if key in states:
                    states[key] = checked_callback_state(callback, states[key])

    #: ``predict`` runs the fast inference path (set to False to predict with the model as is)
    fast_predict: bool = True

    def on_predict_start(self) -> None:
        # The fast path: BatchNorm folded into the convolutions, channels-last tensors,
        # inference mode; the outputs equal the model's up to float rounding.
        # The folded copy replaces the model for predict only; on_predict_end puts the
        # trainable model back, so fit or validate after predict see the real weights.
        model = getattr(self, "model", None)
        if self.fast_predict and isinstance(model, nn.Module):
            from heads.inference import optimize_for_inference

            self.__dict__["_trainable_model"] = model  # outside the module tree / state_dict
            self.model = optimize_for_inference(model)

    def on_predict_end(self) -> None:
        trainable = self.__dict__.pop("_trainable_model", None)
        if trainable is not None:
            self.model = trainable

    # -- evaluation: Lightning's hooks call the task's --------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.eval_epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self.eval_epoch_start("test")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.eval_step(batch, "validate", "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.eval_step(batch, "test", "test")

    def on_validation_epoch_end(self) -> None:
        self.eval_epoch_end("validate", "val")

    def on_test_epoch_end(self) -> None:
        self.eval_epoch_end("test", "test")

    def eval_epoch_start(self, prefix: str) -> None:
        """Hook: start an evaluation (logged under ``prefix``, ``"val"`` or ``"test"``) from
        fresh, process-local state. The base resets ``eval_loss[prefix]`` where the task has
        one (``tasks.metrics.logged.SetMean``); a task with more state resets it too and calls
        ``super().eval_epoch_start``."""
        losses = getattr(self, "eval_loss", None)
        if isinstance(losses, nn.ModuleDict) and prefix in losses:
            losses[prefix].reset()

    def eval_step(self, batch: Any, stage: str, prefix: str) -> None:
        """Hook: add one batch to the evaluation of trainer stage ``stage`` (``"validate"``
        or ``"test"``), whose values are logged under ``prefix`` (``"val"``, ``"test"``)."""
        raise NotImplementedError(f"{type(self).__name__} has no eval_step")

    def eval_epoch_end(self, stage: str, prefix: str) -> None:
        """Hook: log the finished evaluation of ``stage``: the whole set's numbers, the same
        on every process under DDP."""

    def on_train_epoch_end(self) -> None:
        data = self.trainer.datamodule if self._trainer else None
        # Every rank logs (a collective), whether or not it skipped anything itself.
        if getattr(data, "on_bad_sample", "raise") == "skip":
            skipped = float(data.skipped_samples)
            self.log("train/skipped_samples", skipped, reduce_fx="sum", sync_dist=True)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the same step on every process: each drops the same (all-reduced) gradients
        if self.global_step < self.freeze_backbone_steps:
            for p in self.model.backbone.parameters():
                p.grad = None  # the optimizer skips it: no update, no decay, no momentum

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters, split into decayed and not-decayed groups."""
        decay, no_decay = [], []
        for module in self.modules():
            for name, p in module.named_parameters(recurse=False):
                if not p.requires_grad:
                    continue
                plain = isinstance(module, _NORM_TYPES) or name == "bias"
                (no_decay if plain and not self.decay_norm_and_bias else decay).append(p)
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameter_groups())
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if isinstance(scheduler, _WarmupSchedule):
            # estimated_stepping_batches sets up the train loader, so it comes first.
            total = int(self.trainer.estimated_stepping_batches)
            if scheduler.total_steps is None:
                scheduler.total_steps = total
            if isinstance(scheduler, WarmupExponentialLR) and scheduler.steps_per_decay is None:
                per_epoch = (
                    self.trainer.num_training_batches // self.trainer.accumulate_grad_batches
                )
                scheduler.steps_per_decay = max(1, int(per_epoch))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval},
        }
