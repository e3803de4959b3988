"""The ``mobilezoo`` command: LightningCLI with fit, validate, test and predict, plus
``mobilezoo export`` (ONNX, parity check, int8; see ``tasks.export``), ``mobilezoo weights``
and ``mobilezoo convert`` (named weights, TF import; see ``tasks.cli.weights``) and
``mobilezoo plot`` (the curves of a finished run; see ``tasks.viz.plots``) and ``mobilezoo
configs`` (the shipped recipes, which ``-c <name>`` also finds; see ``tasks.cli.configs``)."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

import tasks
from backbones.weights import WeightsError
from tasks.base import BaseTask
from tasks.callbacks import FiniteLossCheck, LearningRateLog, MetricsSummary
from tasks.checkpoints.cost import check_checkpoint_state, check_model_cost
from tasks.checkpoints.hparams import check_hparams, merge_hparams, saved_hparams, task_hparams
from tasks.checkpoints.io import (
    CheckpointError,
    check_lightning_version,
    fetch_checkpoint,
    is_url,
    quote,
    read_checkpoint,
    shorten,
)
from tasks.checkpoints.names import NAMES, resolve_checkpoint_name
from tasks.cli.configs import resolve_config_args
from tasks.cli.errors import instantiation_error
from tasks.cli.session import (
    add_session_arguments,
    after_instantiate,
    mobilezoo_parser_kwargs,
    parse_or_exit,
    parse_with_short_errors,
)
from tasks.config_limits import ConfigError, optimizer_problem
from tasks.config_limits import install as install_bounded_yaml
from tasks.data.io import BadSampleError
from tasks.data.summary import DataSummary
from tasks.data.validate import AnnotationError
from tasks.peer_failure import peer_failure, stop_children
from tasks.task_classes import registered_tasks
from tasks.viz.figures import EvaluationFigures

log = logging.getLogger("mobilezoo")

#: every class ``tasks`` exposes, imported (the package loads them on first use):
#: jsonargparse resolves a short class name (``--data DemoClassificationDataModule``) and
#: lists the choices in ``--help`` among the subclasses already imported
_EXPOSED = [getattr(tasks, name) for name in tasks.__all__]

#: the zoo's tasks by every class path a checkpoint may name them with
_TASKS = registered_tasks()


def _task_class(class_path: str) -> type:
    if class_path in _TASKS:
        return _TASKS[class_path]
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # the config's own choice


class MobileZooCLI(LightningCLI):
    """LightningCLI over the zoo's tasks (``model:``) and data modules (``data:``).

    Unlike LightningCLI, a checkpoint's hyper-parameters do not silently override the
    command line (``tasks.checkpoints.hparams`` states the rule), checkpoints are untrusted
    (read with ``weights_only=True``, URLs verified, their task class checked against the
    zoo's, their values bounded), and every config is bounds-checked before anything is built.
    """

    def __init__(self, *args, parser_kwargs=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # program name, help text, no abbreviated keys (see tasks.cli.session)
        kwargs["parser_kwargs"] = parser_kwargs or mobilezoo_parser_kwargs(self.subcommands())
        install_bounded_yaml()  # nesting and alias expansion of YAML bounded
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_lightning_class_args(MetricsSummary, "metrics_summary")
        parser.add_lightning_class_args(FiniteLossCheck, "finite_loss_check")
        parser.add_lightning_class_args(LearningRateLog, "lr_log")
        parser.add_lightning_class_args(EvaluationFigures, "evaluation_figures")
        parser.add_lightning_class_args(DataSummary, "data_summary")
        add_session_arguments(parser)

    def after_instantiate_classes(self) -> None:
        # validate/test/predict of a checkpoint write next to its run; --draw_threshold
        after_instantiate(self)

    def parse_arguments(self, parser, args) -> None:  # type: ignore[no-untyped-def]
        given = sys.argv[1:] if args is None else args
        if not isinstance(given, (dict, Namespace)) and any(map(_is_print_config, given)):
            parse_with_short_errors(self, parser, args, self._print_linked_config)
        # misspelled keys: one line naming the closest valid key; predict without input
        # images stops here, before any checkpoint is read
        parse_with_short_errors(self, parser, args, super().parse_arguments)
        # What the user gave (-c files and command line), without defaults: it beats the
        # checkpoint's hyper-parameters, and the values that follow from the data.
        if isinstance(given, (dict, Namespace)):
            self._explicit = parser.parse_object(given, defaults=False)
        else:
            self._explicit = parser.parse_args(list(given), defaults=False)
        sub = self.config.get("subcommand")
        section = self.config[sub] if sub else self.config
        for key, value in _linked_from_data(self.config, self._explicit).items():
            section[key] = value

    def _print_linked_config(self, parser, args) -> None:  # type: ignore[no-untyped-def]
        """``--print_config`` prints during the parse, before the values that follow from
        the data are set: parse without it first, then print with them (and exit)."""
        given = sys.argv[1:] if args is None else list(args)
        plain = [a for a in given if not _is_print_config(a)]
        config, explicit = parser.parse_args(plain), parser.parse_args(plain, defaults=False)
        linked = _linked_from_data(config, explicit)
        parser.parse_args([*given, *(f"--{k}={v}" for k, v in linked.items())])

    def _parse_ckpt_path(self) -> None:
        sub = self.config.get("subcommand")
        if not sub or not self.config[sub].get("ckpt_path"):
            return
        section = self.config[sub]
        if section.get("weights_only") is False:
            raise CheckpointError("--weights_only false is refused: checkpoints are untrusted")
        section.weights_only = True
        path = str(section.ckpt_path)
        if is_url(path):
            path = section.ckpt_path = str(fetch_checkpoint(path))
        elif path in NAMES and not Path(path).is_file():
            # Lightning would look in this run's new, empty folder: the config's last run
            try:
                name, path = path, str(resolve_checkpoint_name(path, section.get("trainer")))
            except CheckpointError as err:
                if sub != "fit" or path != "last":
                    raise
                # `fit --ckpt_path last` in a config resumes when it can (as in Lightning)
                log.warning("%s; training from the start", err)
                section.ckpt_path = None
                return
            section.ckpt_path = path
            rank_zero_info(f"{sub}: --ckpt_path {name} is {path}")
        elif path in ("hpc", "registry") and not Path(path).is_file():
            return  # Lightning finds that file; BaseTask.on_load_checkpoint checks it
        ckpt = read_checkpoint(path)
        check_lightning_version(ckpt, path)
        saved_class, hparams = saved_hparams(ckpt, path)
        model = section.model
        task_cls = _task_class(model.class_path)
        if saved_class is not None:
            saved = _TASKS.get(saved_class)
            if saved is None and saved_class != model.class_path:
                raise CheckpointError(
                    f"checkpoint {path} names the class {quote(saved_class)}, which is not a "
                    f"task of mobilezoo ({', '.join(sorted({c.__name__ for c in _TASKS.values()}))})"
                    " nor the class of the config"
                )
            if saved is not None and saved is not task_cls:
                raise CheckpointError(
                    f"checkpoint {path} was saved by {saved.__name__}; the config builds "
                    f"{task_cls.__name__}: use a {saved.__name__} config with this checkpoint"
                )
        explicit = _given_model_args(self._explicit, sub)
        merged, notes = merge_hparams(
            task_hparams(task_cls, hparams, path),
            model.init_args.as_dict(),
            explicit,
            task_cls.architecture_hparams,
            task_cls.evaluation_hparams,
            task_cls.weights_hparams,
        )
        for note in notes:
            log.warning("checkpoint %s: %s", path, note)
        check_hparams(merged, f"checkpoint {path}")
        # what the values ask of the machine, and the weights against them, before reading
        cost = check_model_cost(task_cls, merged, f"checkpoint {path}")
        check_checkpoint_state(ckpt, cost, f"checkpoint {path}")
        changed = {k: v for k, v in merged.items() if model.init_args.get(k) != v}
        update = {sub: {"model": {"class_path": model.class_path, "init_args": changed}}}
        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                self.config = self.parser.parse_object(update, self.config)
        except SystemExit:
            # jsonargparse quotes whole values; a hostile one could be megabytes long.
            reason = captured.getvalue().rpartition("error:")[2].strip()
            raise CheckpointError(
                f"checkpoint {path}: its hyper-parameters do not fit {task_cls.__name__}: "
                f"{shorten(reason)}"
            ) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:
            # a class that refused its config values: one line naming the section and why
            sub = self.config.get("subcommand")
            config = self.config[sub] if sub else self.config
            sections = {
                config[name].class_path: name
                for name in ("model", "data")
                if isinstance(config.get(name), Namespace)
            }
            text = instantiation_error(err, sections)
            if text is None:
                raise
            raise ConfigError(text) from None

    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        model = self.config[sub].model if sub else self.config.get("model")
        if model is not None and model.get("init_args") is not None:
            check_hparams(model.init_args.as_dict(), "model.init_args")
            problem = optimizer_problem(model.init_args.as_dict())
            if problem:  # here, not when torch builds the optimizer after the data set-up
                raise ConfigError(problem)


def _is_print_config(arg: str) -> bool:
    return arg.partition("=")[0] == "--print_config"


def _given_model_args(explicit: Namespace, sub: str | None) -> set[str]:
    """The names of the model's ``init_args`` in ``explicit`` (the config parsed without
    defaults: what ``-c`` files and the command line gave)."""
    section = explicit.get(sub) if sub else explicit
    model = section.get("model") if isinstance(section, Namespace) else None
    init_args = model.get("init_args") if isinstance(model, Namespace) else None
    return set(init_args.as_dict()) if isinstance(init_args, Namespace) else set()


def _linked_from_data(config: Namespace, explicit: Namespace) -> dict[str, Any]:
    """The model's arguments that follow from the data section (the task's
    ``args_from_data``: the class count of the demo data modules) where the user gave none,
    as ``{"model.init_args.<name>": value}`` (keys within the subcommand's section). A given
    value stays; ``BaseTask.setup`` compares it with the data.

    Not a jsonargparse ``link_arguments``: a link's target can no longer be given, while a
    model value must stay settable (a data module that reads its classes from files, a
    checkpoint's architecture) and be checked against the data when given."""
    sub = config.get("subcommand")
    section = config.get(sub) if sub else config
    model = section.get("model") if isinstance(section, Namespace) else None
    data = section.get("data") if isinstance(section, Namespace) else None
    if not isinstance(model, Namespace) or not isinstance(data, Namespace):
        return {}
    model_args, data_args = model.get("init_args"), data.get("init_args")
    if not isinstance(model_args, Namespace) or not isinstance(data_args, Namespace):
        return {}
    task_cls = _task_class(model.class_path)
    if not (isinstance(task_cls, type) and issubclass(task_cls, BaseTask)):
        return {}
    given = _given_model_args(explicit, sub)
    return {
        f"model.init_args.{name}": value
        for name, value in task_cls.args_from_data(data_args.as_dict()).items()
        if name in model_args and name not in given
    }


#: errors of an input the user gave: untrusted or unusable checkpoints, annotation files and
#: images, configs that cannot run, a data set folder or file that is not there
_INPUT_ERRORS = (CheckpointError, AnnotationError, BadSampleError, ConfigError, FileNotFoundError)
#: the exit code when another process of the run was lost (2: the input was bad)
_PEER_LOST = 1


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``mobilezoo`` console script."""
    try:
        _run(args)
    except SIGTERMException:
        # Lightning stops cleanly on SIGTERM (checkpoint callbacks with save_on_exception
        # save first) but exits 0; job schedulers expect 128 + SIGTERM.
        raise SystemExit(143) from None
    except Exception as err:
        reported = _error_line(err)
        if reported is None:
            raise
        line, code = reported
        sys.stderr.write(f"mobilezoo: error: {line}\n")
        if code == _PEER_LOST:
            stop_children()  # a hung rank this process launched would outlive the run
        raise SystemExit(code) from None


def _error_line(err: Exception) -> tuple[str, int] | None:
    """The one line (no traceback) and the exit code that report ``err``; ``None`` for an
    error that keeps its traceback."""
    if isinstance(err, _INPUT_ERRORS):
        # one line naming the file or option and the problem
        return _own_message(err), 2
    if isinstance(err, ValueError):
        # Weights that cannot be used reach here wrapped by jsonargparse (the task's
        # __init__ loads them while the config is instantiated): the cause, one line.
        cause = _weights_error(err)
        return (str(cause), 2) if cause is not None else None
    # Another process of a DDP run died or hung (also when a hook that ran on the way out
    # failed in turn): one line saying so, not gloo's or NCCL's traceback (see
    # tasks.peer_failure).
    line = peer_failure(err)
    return (line, _PEER_LOST) if line is not None else None


def _weights_error(err: BaseException) -> WeightsError | None:
    """The ``WeightsError`` that caused ``err`` (itself, or along its chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, WeightsError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _own_message(err: Exception) -> str:
    """``err``'s message; an error re-raised from a DataLoader worker carries the worker's
    traceback in its message, whose last line is the original error."""
    text = str(err).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def export_main(args: list[str]) -> None:
    """``mobilezoo export SOURCE [--output_dir DIR] [--int8 true] [--data ...]``.

    The options are the arguments of ``tasks.export.export`` (typed, so jsonargparse checks
    them); ``--data`` takes a data module like the training config's ``data:`` section.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    from tasks.export import export

    install_bounded_yaml()
    parser = ArgumentParser(
        prog="mobilezoo export",
        description="Export a checkpoint or a builder to ONNX, check it in onnxruntime, "
        "optionally quantize it to int8.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML with these options")
    parser.add_function_arguments(export, as_group=False, skip={"printer"})
    if args and not args[0].startswith("-"):
        args = ["--source", *args]  # the source may be given positionally
    config = parse_or_exit(parser, args, "mobilezoo export")
    try:
        # jsonargparse 4.49 renamed instantiate_classes (deprecated) to instantiate
        init = getattr(parser, "instantiate", parser.instantiate_classes)(config)
    except (ValueError, TypeError) as err:  # the data module refused its arguments
        data = config.get("data")
        sections = {data.class_path: "data"} if isinstance(data, Namespace) else {}
        text = instantiation_error(err, sections)
        if text is None:
            raise
        parser.exit(2, f"mobilezoo export: error: {text}\n")
    options = {k: v for k, v in init.items() if k != "config"}
    try:
        export(**options)
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as err:
        parser.exit(2, f"mobilezoo export: error: {err}\n")


def _run(args: list[str] | None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["configs"]:
        from tasks.cli.configs import configs_main

        configs_main(argv[1:])
        return
    if argv[:1] == ["export"]:
        export_main(argv[1:])
        return
    if argv[:1] in (["weights"], ["convert"]):  # named weights and TF import
        from tasks.cli.weights import convert_main, weights_main

        (weights_main if argv[0] == "weights" else convert_main)(argv[1:])
        return
    if argv[:1] == ["plot"]:
        from tasks.viz.plots import plot_main

        plot_main(argv[1:])
        return
    # -c <recipe name>: the shipped config of that name (also from an installed wheel)
    resolved = resolve_config_args(argv)
    if resolved != argv:
        if args is None:
            sys.argv[1:] = resolved  # LightningCLI warns when given args outside Python
        else:
            args = resolved
    MobileZooCLI(
        BaseTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        args=args,
    )
