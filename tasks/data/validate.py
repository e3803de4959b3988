"""Field checks shared by the annotation readers (COCO JSON, VOC lists, Cityscapes names,
ImageFolder trees).

The rule every reader follows: what would change a metric is an error; what can be
repaired without changing it is repaired, counted, and reported in one log line per file.
Every error is an ``AnnotationError`` whose message names the file, the record (image id,
annotation id, line number...) and the field.
"""

from __future__ import annotations

import gc
import logging
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

log = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation file holds a value that would change the results; the message names
    the file, the record and the field."""

    def __init__(self, path: str | os.PathLike, record: str, field: str, problem: str) -> None:
        self.path, self.record, self.field = Path(path), record, field
        super().__init__(f"{path}: {record}: field {field!r} {problem}")


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large file is parsed and checked.

    Building a million small dicts and lists (no reference cycles) otherwise triggers
    repeated full collections over an ever larger heap, which costs about a third of the
    time of checking COCO train.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def describe(value: Any, limit: int = 60) -> str:
    """``repr`` of a bad value, cut short (a hostile file must not make a huge message),
    with its JSON-ish type."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{text} ({type(value).__name__})"


#: ids and sizes become int64 tensors and arrays: larger values would overflow there
INT64_MAX = 2**63 - 1


def check_int(
    value: Any, path: Path, record: str, field: str, minimum: int = 0, maximum: int = INT64_MAX
) -> int:
    """``value`` as an ``int`` in ``minimum..maximum``, or an ``AnnotationError`` naming the
    field."""
    if type(value) is not int:  # bool and 1.0 are not ids
        raise AnnotationError(path, record, field, f"must be an integer, got {describe(value)}")
    if not minimum <= value <= maximum:
        raise AnnotationError(
            path, record, field, f"must be in {minimum}..{maximum}, got {describe(value)}"
        )
    return value


def check_relative_path(
    value: Any, path: Path, record: str, field: str, allow_outside_root: bool = False
) -> str:
    """A file name that stays inside the data set's folder.

    Absolute paths (POSIX or Windows, drive letters included) and paths with a ``..``
    component are refused unless ``allow_outside_root``: an annotation file must not make
    the loader read (and train or evaluate on) files elsewhere on the machine.
    """
    if (
        type(value) is str
        and value.strip()
        and value[0] not in "/\\"
        and ":" not in value
        and ".." not in value
        and "\x00" not in value
    ):
        return value  # the common case, without building path objects
    if not isinstance(value, str) or not value.strip():
        raise AnnotationError(
            path, record, field, f"must be a non-empty string, got {describe(value)}"
        )
    if "\x00" in value:
        raise AnnotationError(path, record, field, f"holds a NUL character: {describe(value)}")
    if allow_outside_root:
        return value
    posix, windows = PurePosixPath(value), PureWindowsPath(value)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise AnnotationError(
            path, record, field,
            f"{value!r} is an absolute path; file names must be relative to the data set "
            "folder (set allow_outside_root=True to accept it)",
        )  # fmt: skip
    if ".." in posix.parts or ".." in windows.parts:
        raise AnnotationError(
            path, record, field,
            f"{value!r} leaves the data set folder through '..' (set allow_outside_root=True "
            "to accept it)",
        )  # fmt: skip
    return value


class Repairs:
    """Counts of repairs made to one file, reported in one log line.

    Example: ``repairs.add("missing annotation ids assigned")`` per repaired record, then
    ``repairs.report()`` logs ``<file>: 3 missing annotation ids assigned, ...``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()

    def add(self, what: str, count: int = 1) -> None:
        if count:
            self.counts[what] += count

    def __getitem__(self, what: str) -> int:
        return self.counts[what]

    def report(self) -> None:
        if self.counts:
            parts = ", ".join(f"{n} {what}" for what, n in sorted(self.counts.items()))
            log.warning("%s: %s", self.path, parts)
