"""Short command-line errors: the bad key and the closest valid one, not a usage dump."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence

_UNRECOGNIZED = re.compile(r"[Uu]nrecognized arguments: (.*)")
_NOT_ACCEPTED = re.compile(r"Parser key \"([\w.]+)\".*?Option '(\w+)' is not accepted", re.S)


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


def short_error(
    prog: str, message: str, argv: Sequence[str], valid_keys: Callable[[list[str]], list[str]]
) -> str:
    """One or two lines for a parse error. ``valid_keys(argv)`` lists the keys a command line
    without the rejected options would have (empty when it cannot be parsed either)."""
    bad = bad_keys(message, argv)
    if not bad:
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
