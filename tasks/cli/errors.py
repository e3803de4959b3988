"""Short command-line errors: the bad key and the closest valid one, not a usage dump."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_UNRECOGNIZED = re.compile(r"[Uu]nrecognized arguments: (.*)")
_PARSER_KEY = re.compile(r'(?:^(?:- )?|: )Parser key "([^"]+)":$')
_NESTED_ARG = re.compile(r"Given value: NestedArg\(key='([\w.]+)', val='(.*)'\)$", re.M)
_UNION = "Does not validate against any of the Union subtypes"
#: lines of jsonargparse's nested Union messages that say where, not why
_STRUCTURE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "- Expected a <class 'NoneType'>",
)
#: longest reason quoted from a nested error (a hostile value may be megabytes long)
_REASON_CHARS = 300


_NOT_ACCEPTED = re.compile(r"Parser key \"([\w.]+)\".*?Option '(\w+)' is not accepted", re.S)
#: a config file's option that the class it configures does not take
_CLASS_OPTION = re.compile(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", re.S)


def option_tokens(argv: Sequence[str]) -> list[tuple[int, str, bool]]:
    """``(index, key, has_inline_value)`` of every ``--key`` token in ``argv``."""
    out = []
    for i, token in enumerate(argv):
        if token.startswith("--") and len(token) > 2:
            key, eq, _ = token[2:].partition("=")
            out.append((i, key, bool(eq)))
    return out


def bad_keys(message: str, argv: Sequence[str]) -> list[str]:
    """The keys of ``argv`` that ``message`` (a jsonargparse error) rejects."""
    keys = [key for _, key, _ in option_tokens(argv)]
    found = []
    match = _UNRECOGNIZED.search(message)
    if match:
        found += [k for k in keys if f"--{k}" in match.group(1)]
    for parent, option in _NOT_ACCEPTED.findall(message):
        found += [k for k in keys if k.startswith(parent + ".") and k.split(".")[-1] == option]
    return list(dict.fromkeys(found))


def without_keys(argv: Sequence[str], keys: Iterable[str]) -> list[str]:
    """``argv`` without the tokens (and separate values) of ``keys``."""
    drop: set[int] = set()
    keys = set(keys)
    for i, key, inline in option_tokens(argv):
        if key in keys:
            drop.add(i)
            if not inline and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                drop.add(i + 1)
    return [t for i, t in enumerate(argv) if i not in drop]


def closest_key(bad: str, valid: Iterable[str]) -> str | None:
    """The valid key a user most likely meant by ``bad``.

    A key with the same last part wins (``model.init_args.lr`` ->
    ``model.init_args.optimizer.init_args.lr``), the one sharing most of ``bad``'s prefix
    first; otherwise the most similar spelling (``trainer.max_epoch`` ->
    ``trainer.max_epochs``).
    """
    valid = [v for v in valid if v != bad]
    leaf = bad.split(".")[-1]
    same_leaf = [v for v in valid if v.split(".")[-1] == leaf]
    if same_leaf:
        top = bad.split(".")[0]
        same_leaf.sort(key=lambda v: (not v.startswith(top + "."), len(v)))
        return same_leaf[0]
    close = difflib.get_close_matches(bad, valid, n=1, cutoff=0.75)
    return close[0] if close else None


def one_line(text: str, limit: int = _REASON_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nested_reason(message: str) -> tuple[str, str] | None:
    """``(option, reason)`` of jsonargparse's nested "Parser key ..." and "Does not validate
    against any of the Union subtypes" messages: the dotted key down to the value that failed
    (``model.init_args.optimizer.init_args.lr``) and that value's own error, or ``None``
    when ``message`` is not such a message."""
    if _UNION not in message and not message.lstrip().startswith('Parser key "'):
        return None
    keys: list[str] = []
    reasons: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        key = _PARSER_KEY.search(line)
        if key:
            if key.start() and "callable class" in line[: key.start()]:
                keys.append("init_args")  # the arguments of an optimizer or scheduler class
            keys.append(key.group(1))
        elif line.startswith(("- Problem with given class_path", "Problem with given class_path")):
            keys.append("init_args")
        elif line and not line.startswith(_STRUCTURE):
            reasons.append(line.removeprefix("- "))
    if not reasons:
        return None
    # a value of a union type fails once per type: the type's own check says it best
    typed = [r for r in reasons if r.startswith("Expected a <class")]
    reason = (typed or reasons)[0]
    given = _NESTED_ARG.search(message)  # a command-line value: its full key and text
    if given and keys:
        keys = [keys[0], "init_args", *given.group(1).split(".")]
        if "Got value" not in reason:
            reason += f". Got value: {given.group(2)}"
    return ".".join(keys), one_line(reason)


def short_error(
    prog: str, message: str, argv: Sequence[str], valid_keys: Callable[[list[str]], list[str]]
) -> str:
    """One or two lines for a parse error. ``valid_keys(argv)`` lists the keys a command line
    without the rejected options would have (empty when it cannot be parsed either)."""
    bad = bad_keys(message, argv)
    if not bad:
        nested = nested_reason(message)
        if nested is not None:  # a value of the wrong type or out of range: where and why
            key, reason = nested
            reason += _class_option_hint(message, key)
            return f"{prog}: error: --{key}: {reason}" if key else f"{prog}: error: {reason}"
        if message.startswith("Problems parsing config"):  # the file and line are named
            return f"{prog}: error: {one_line(message)}"
        return f"{prog}: error: {message.strip()}\n(run `{prog} --help` for the options)"
    valid = valid_keys(without_keys(argv, bad))
    lines = []
    for key in bad:
        hint = closest_key(key, valid)
        lines.append(
            f"{prog}: error: unknown option --{key}"
            + (f"; did you mean --{hint}?" if hint else f" (see `{prog} --help`)")
        )
    return "\n".join(lines)


def _class_option_hint(message: str, key: str) -> str:
    """``"; did you mean KEY?"`` for an option a config file gives a class that does not
    take it (an option moved into a group: ``min_negatives`` -> ``loss.min_negatives``),
    else ``""``. The class's options come from its signature (``init_parameters``: a
    task's own and, through ``**kwargs``, ``BaseTask``'s; option groups, typed as
    dataclasses, by their fields): the file cannot be parsed to list them."""
    from tasks.checkpoints.hparams import init_parameters

    match = _CLASS_OPTION.search(message)
    if match is None:
        return ""
    module, _, name = match.group(1).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
        hints: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):  # a subclass's annotation wins
            if "__init__" in vars(klass):
                hints.update(typing.get_type_hints(klass.__init__))
    except Exception:  # a class that cannot be imported or typed: no hint, the error stands
        return ""
    options = []
    for param in sorted(init_parameters(cls)):
        kind = hints.get(param)
        if dataclasses.is_dataclass(kind):
            options += [f"{param}.{f.name}" for f in dataclasses.fields(kind)]
        else:
            options.append(param)
    prefix = key if key.endswith("init_args") else f"{key}.init_args"
    hint = closest_key(match.group(2), options)  # by the option's own name, not the prefix
    return f"; did you mean {prefix}.{hint}?" if hint else ""


_CLASS_PATH = re.compile(r"Given value: Namespace\(class_path='([\w.]+)'")


def instantiation_error(err: Exception, sections: dict[str, str]) -> str | None:
    """One line for an error that a config's class raised when it was built, or ``None``
    when ``err`` is not one.

    jsonargparse wraps what the class raised (``batch_size must be >= 1``, a weights file
    that cannot be read) in its "Does not validate against any of the Union subtypes"
    message with the whole config; the class's own exception is the ``__cause__``.

    Args:
        err: what ``parser.instantiate_classes`` raised.
        sections: config section (``model``, ``data``) by the class path it builds.
    """
    if _UNION not in str(err):
        return None
    cause: BaseException = err
    while _UNION in str(cause) and cause.__cause__ is not None:
        cause = cause.__cause__
    found = _CLASS_PATH.search(str(err))
    class_path = found.group(1) if found else ""
    where = f"{sections[class_path]} ({class_path})" if class_path in sections else class_path
    kind = "" if isinstance(cause, ValueError) else f"{type(cause).__name__}: "
    reason = nested_reason(str(cause))
    text = f"--{reason[0]}: {reason[1]}" if reason else one_line(kind + str(cause))
    return f"{where}: {text}" if where else text
