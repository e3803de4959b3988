"""A detector checkpoint's categories against the data's: the same, renumbered, or not.

A detector predicts contiguous labels; its checkpoint records which COCO category id and
name each label meant in training. Evaluation maps predicted labels to the *data's*
category ids, so a checkpoint whose ids differ from the data's (the same classes renumbered
``1, 2, 3`` -> ``5, 17, 42``) scored every detection as the wrong class: mAP 0.0, no word.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tasks.checkpoints.io import CheckpointError, quote

log = logging.getLogger("mobilezoo")


def checked_categories(ids: object, names: object, source: str) -> tuple[list[int], list[str]]:
    """A checkpoint's ``category_ids`` and ``class_names`` (untrusted): lists of the same
    length of integers and of strings, else a ``CheckpointError``."""
    ok_ids = isinstance(ids, (list, tuple)) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in ids
    )
    ok_names = isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)
    if not (ok_ids and ok_names and len(ids) == len(names)):  # type: ignore[arg-type]
        raise CheckpointError(
            f"{source}: category_ids {quote(ids, 60)} and class_names {quote(names, 60)} "
            "are not a list of integers and a list of names of one length"
        )
    return list(ids), list(names)  # type: ignore[arg-type]


def matched_categories(
    saved_ids: Sequence[int], saved_names: Sequence[str], data_ids: Sequence[int],
    data_names: Sequence[str], source: str,
) -> tuple[list[int], list[str]]:  # fmt: skip
    """The category ids and names to evaluate with.

    The data's, when they equal the checkpoint's, or when only the ids differ and the names
    are the same, in the same label order (a renumbering; logged). Otherwise the labels mean
    other classes than the data's and a ``CheckpointError`` names both lists.
    """
    saved_ids, saved_names = checked_categories(saved_ids, saved_names, source)
    data_ids, data_names = list(data_ids), list(data_names)
    if saved_ids == data_ids and saved_names == data_names:
        return data_ids, data_names
    if saved_names == data_names and len(set(data_names)) == len(data_names):
        log.warning(
            "%s: category ids %s in the checkpoint are %s in the data (matched by name: %s)",
            source, quote(saved_ids, 60), quote(data_ids, 60), quote(data_names, 80),
        )  # fmt: skip
        return data_ids, data_names
    raise CheckpointError(
        f"{source} was trained on category ids {quote(saved_ids, 60)} named "
        f"{quote(saved_names, 80)}, the data has ids {quote(data_ids, 60)} named "
        f"{quote(data_names, 80)}: its labels would be scored as other classes"
    )
