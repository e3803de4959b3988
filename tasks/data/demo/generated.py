"""What the demo data modules share: a set that is a pure function of its settings, written
once in the native layout of the real data set that its data module reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.data.cache import generate_once, resolve_root, spec_hash

#: entries of a spec that name it rather than being arguments of its generator
_LABELS = ("kind", "version")


class GeneratedDemo:
    """Mixin (before the real data module in the bases) that writes the set on first use.

    A subclass sets ``make = staticmethod(generator)``, called as
    ``make(folder, **arguments)`` with the spec's entries other than ``kind`` and
    ``version``, and calls ``demo_root`` in its ``__init__`` to store the spec and find the
    set's folder.
    """

    make: Callable[..., None]
    spec: dict[str, Any]
    root: Path

    def demo_root(self, root: str | None, spec: dict[str, Any]) -> str:
        """Store ``spec``; return ``root``, or by default
        ``$MOBILEZOO_CACHE/demo_<kind>_<hash of spec>`` (one folder per setting)."""
        self.spec = spec
        return str(resolve_root(root, f"demo_{spec['kind']}_{spec_hash(spec)}"))

    def prepare_data(self) -> None:
        arguments = {k: v for k, v in self.spec.items() if k not in _LABELS}
        generate_once(self.root, self.spec, lambda folder: self.make(folder, **arguments))
