"""Silence the third-party warnings and tips a normal mobilezoo run cannot act on.

Imported by ``tasks`` (and so by the CLI) before Lightning starts. Each filter is narrow:
one message of one library, with the reason it is harmless here.
"""

from __future__ import annotations

import logging
import os
import warnings

# albumentations checks PyPI for a newer version on import; the version is pinned.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_IGNORED = [
    # torch 2.9+ deprecates LeafSpec inside Lightning's own pytree helper (Lightning's to fix)
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", None),
]

for _message, _category in _IGNORED:
    warnings.filterwarnings("ignore", message=_message, category=_category or Warning)


class _DropAdverts(logging.Filter):
    """Drop Lightning's "💡 Tip: ... try installing litlogger" advertisement."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_DropAdverts())
