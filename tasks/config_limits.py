"""Bounds on the shape of untrusted config values: YAML nesting and alias expansion, and
the nesting of values loaded from elsewhere (a checkpoint's hyper-parameters); and
``ConfigError``, what a config that cannot run raises.

jsonargparse reads ``-c`` files, ``--config`` files of ``mobilezoo export`` and YAML values
on the command line with PyYAML. A 1 KB file of nested aliases (a "billion laughs") parses
into a small graph of shared lists, which jsonargparse then walks and copies element by
element: minutes of CPU and gigabytes before it is killed. A list nested a few thousand
deep ends in a ``RecursionError`` traceback. ``bounded_yaml_load`` composes the document
first and refuses one whose expanded tree (every alias counted each time it is used) has
more than ``MAX_NODES`` nodes or nests deeper than ``MAX_DEPTH``, or an alias that
contains itself; jsonargparse reports the ``yaml.YAMLError`` it raises in one line.
``shape_problem`` bounds lists and dicts from other sources the same way (``repr`` and
jsonargparse recurse once per level).
"""

from __future__ import annotations

import math
import os
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader


class ConfigError(ValueError):
    """A config that cannot run: an option out of range, a class that refused its arguments,
    a model that does not fit the data. The CLI prints the message as one line and exits 2.

    Defined here, below the tasks and the CLI, because both raise it (``BaseTask`` when the
    model does not fit the data)."""


#: deepest nesting of lists and mappings (the zoo's configs nest about 6 deep)
MAX_DEPTH = 100
#: most nodes of the expanded document (a config is a few hundred)
MAX_NODES = 1_000_000


def shape_problem(value: Any, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> str:
    """Why ``value`` is too deep or too large to handle (``""`` when it is not): lists,
    tuples and dicts nesting deeper than ``max_depth``, or more than ``max_nodes`` values
    counting shared ones each time they appear (an unpickled object can share a list many
    times over, as YAML aliases do). Walked without recursion, and never past the limits.
    """
    stack, seen = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if seen > max_nodes:
            return f"holds more than {max_nodes:,} values"
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if children and depth + 1 > max_depth:
            return f"nests deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children)
    return ""


class YAMLTooLarge(yaml.YAMLError):
    """A YAML document that nests too deeply or expands to too many nodes."""


def _expanded(
    node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], open_: set[int]
) -> tuple[int, int]:
    """``(nodes, height)`` of ``node``'s tree with every alias expanded; raises past the
    limits. An alias is walked once and counted every time it is used."""
    if depth > MAX_DEPTH:
        raise YAMLTooLarge(f"YAML nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, yaml.ScalarNode):
        return 1, 0
    key = id(node)
    if key in memo:
        size, height = memo[key]
        if depth + height > MAX_DEPTH:
            raise YAMLTooLarge(f"YAML nests deeper than {MAX_DEPTH} levels")
        return size, height
    if key in open_:
        raise YAMLTooLarge("a YAML alias contains itself")
    open_.add(key)
    children = (
        [n for pair in node.value for n in pair]
        if isinstance(node, yaml.MappingNode)
        else node.value
    )
    size, height = 1, 0
    for child in children:
        child_size, child_height = _expanded(child, depth + 1, memo, open_)
        size, height = size + child_size, max(height, child_height + 1)
    open_.discard(key)
    if size > MAX_NODES:
        raise YAMLTooLarge(f"YAML expands to more than {MAX_NODES:,} values (aliases of aliases?)")
    memo[key] = size, height
    return size, height


def check_yaml(stream: str) -> None:
    """Raise ``YAMLTooLarge`` when ``stream`` nests deeper than ``MAX_DEPTH`` or expands to
    more than ``MAX_NODES`` nodes; other YAML errors are left to the loader."""
    from jsonargparse._loaders_dumpers import get_yaml_default_loader  # the same resolver

    try:
        node = yaml.compose(stream, Loader=get_yaml_default_loader())
    except RecursionError:  # the composer recurses once per level
        raise YAMLTooLarge(f"YAML nests deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError:
        return  # a syntax error: the loader reports it with its position
    if node is not None:
        _expanded(node, 0, {}, set())


_default_yaml_load = get_loader("yaml")


def bounded_yaml_load(stream: str, path: str = "") -> Any:
    """jsonargparse's YAML loader after ``check_yaml``; errors name ``path`` (the file, when
    jsonargparse reads one) and fit on one line."""
    try:
        check_yaml(stream)
        return _default_yaml_load(stream)
    except yaml.YAMLError as err:
        # jsonargparse gives the file's base name and reads it from within its folder
        name = os.path.abspath(path) if path and os.path.isfile(path) else str(path)
        raise YAMLTooLarge(one_line(err, name)) from None


def one_line(err: yaml.YAMLError, path: str = "") -> str:
    """``err`` as ``<path>, line L, column C: <problem>`` on one line."""
    where = path or "YAML value"
    mark = getattr(err, "problem_mark", None)
    if mark is not None:
        where += f", line {mark.line + 1}, column {mark.column + 1}"
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = f"{where}: {problem}" + (f" ({context})" if context else "")
    return " ".join(text.split())


#: optimizer and LR-schedule arguments that are never negative (torch refuses most of them
#: only when the optimizer is built, after the data are set up)
NON_NEGATIVE = frozenset(
    [
        "lr",
        "weight_decay",
        "momentum",
        "dampening",
        "eps",
        "alpha",
        "lr_decay",
        "initial_accumulator_value",
        "max_lr",
        "min_lr",
        "eta_min",
        "gamma",
        "power",
        "warmup_steps",
        "warmup_factor",
        "min_factor",
        "total_steps",
        "step_size",
        "T_max",
    ]
)


def optimizer_problem(init_args: dict[str, Any], prefix: str = "model.init_args") -> str:
    """The first numeric argument of the task's ``optimizer`` or ``lr_scheduler`` that is
    not finite, or negative where it cannot be (``NON_NEGATIVE``), as
    ``--<key>=<value> must be ...``; ``""`` when there is none.

    Args:
        init_args: the task's ``init_args`` as a dict (``optimizer``: ``class_path`` and
            ``init_args``).
    """
    for name in ("optimizer", "lr_scheduler"):
        spec = init_args.get(name)
        args = spec.get("init_args") if isinstance(spec, dict) else None
        for key, value in (args or {}).items():
            if type(value) not in (int, float):
                continue
            if not math.isfinite(value):
                return f"--{prefix}.{name}.init_args.{key}={value} must be a finite number"
            if key in NON_NEGATIVE and value < 0:
                return f"--{prefix}.{name}.init_args.{key}={value} must be >= 0"
    return ""


def install() -> None:
    """Make jsonargparse read every YAML value and file with ``bounded_yaml_load``."""
    if get_loader("yaml") is not bounded_yaml_load:
        set_loader("yaml", bounded_yaml_load, exceptions=(yaml.YAMLError,))
