"""The model side never reaches up into the Lightning layer.

The model side is ``backbones``, ``heads`` (the TF readers in ``heads.tf_import`` included)
and the exported-file runtime of ``tasks.export`` (``load_exported``, the ONNX / OpenVINO
sessions, the metadata, the graph wrappers and the parity checks). Importing any of it
must not load Lightning, albumentations, pycocotools, a data module or a task, and no file
under ``backbones/`` or ``heads/`` may name ``tasks`` in an import (``importlib`` and
``__import__`` strings included).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: the exported-file runtime: what ``from tasks.export import load_exported`` needs
RUNTIME = (
    "tasks.export.runtime",
    "tasks.export.metadata",
    "tasks.export.onnx",
    "tasks.export.openvino",
    "tasks.export.parity",
    "tasks.export.quantization",
)
#: the only modules of ``tasks`` the runtime may load: the package faces and itself
RUNTIME_MAY_LOAD = ("tasks", "tasks.quiet", "tasks.lazy_names", "tasks.export", *RUNTIME)
#: third-party packages of the Lightning layer
FORBIDDEN_PACKAGES = (
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "albumentations",
    "pycocotools",
    "torchmetrics",
)


def _modules(package: str) -> list[str]:
    """Every module of a package folder (``package.sub.module``), by its files."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


def _forbidden(loaded: list[str], tasks_allowed: tuple[str, ...]) -> list[str]:
    """The forbidden third-party packages (by top-level name) and modules of ``tasks``
    among ``loaded``."""
    bad = sorted({m.split(".")[0] for m in loaded} & set(FORBIDDEN_PACKAGES))
    return bad + [m for m in loaded if m.split(".")[0] == "tasks" and m not in tasks_allowed]


_PROBE = """
import importlib, json, sys
before = set(sys.modules)
new = {}
for name in sys.argv[1:]:
    importlib.import_module(name)
    new[name] = sorted(set(sys.modules) - before)
    before = set(sys.modules)
print(json.dumps(new))
"""


def _load_each(names: list[str]) -> dict[str, list[str]]:
    """Import ``names`` one after another in a fresh interpreter: the modules each one
    added to ``sys.modules``."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_backbones_and_heads_import_with_torch_alone() -> None:
    code = (
        "import sys; import backbones, heads; "
        "from backbones import mobilenet_v2; mobilenet_v2(); "
        "bad = [m for m in ('lightning', 'pytorch_lightning', 'albumentations', 'pycocotools',"
        " 'torchmetrics', 'tasks') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_model_side_modules_load_nothing_of_the_lightning_layer() -> None:
    model_side = _modules("backbones") + _modules("heads")
    assert "heads.tf_import.convert" in model_side  # the TF readers are on the model side
    loaded = _load_each(model_side)
    bad = {name: _forbidden(new, ()) for name, new in loaded.items()}
    assert not {k: v for k, v in bad.items() if v}, bad


@pytest.mark.slow
def test_load_exported_loads_nothing_of_the_lightning_layer() -> None:
    loaded = _load_each(["tasks.export", *RUNTIME])
    bad = {name: _forbidden(new, RUNTIME_MAY_LOAD) for name, new in loaded.items()}
    assert not {k: v for k, v in bad.items() if v}, bad


def _named_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file: statements, and string arguments of
    ``importlib.import_module`` / ``import_module`` / ``__import__`` calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append((node.lineno, first.value))
    return found


def test_no_file_of_the_model_side_imports_tasks() -> None:
    files = sorted((ROOT / "backbones").rglob("*.py")) + sorted((ROOT / "heads").rglob("*.py"))
    assert len(files) > 10
    up = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in files
        for line, module in _named_imports(path)
        if module == "tasks" or module.startswith("tasks.")
    ]
    assert not up, up


def _tasks_imports() -> dict[str, set[str]]:
    """For every module of ``tasks/``, the modules of ``tasks`` it names in an import (at
    any depth of the file: a lazy import inside a function is a dependency too), each
    module and name counted as the sub-package it belongs to (``tasks.checkpoints.io`` ->
    ``tasks.checkpoints``); a module at the top of ``tasks/`` is its own node."""

    def node(module: str) -> str:
        parts = module.split(".")
        if len(parts) > 1 and (ROOT / "tasks" / parts[1]).is_dir():
            return ".".join(parts[:2])
        return module

    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        source = node(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        targets = {
            node(module)
            for _, module in _named_imports(path)
            if module == "tasks" or module.startswith("tasks.")
        }
        graph.setdefault(source, set()).update(targets - {source})
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of ``graph`` (``[a, b, ..., a]``), or ``[]`` when there is none."""
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        for target in sorted(graph.get(node, ())):
            found = walk(target, [*path, node])
            if found:
                return found
        done.add(node)
        return []

    for start in sorted(graph):
        found = walk(start, [])
        if found:
            return found
    return []


def test_the_packages_of_the_lightning_layer_import_each_other_without_a_circle() -> None:
    graph = _tasks_imports()
    assert {"tasks.cli", "tasks.checkpoints", "tasks.metrics", "tasks.base"} <= set(graph)
    circle = _circle(graph)
    assert not circle, " -> ".join(circle)


def test_the_command_is_imported_by_no_module_of_the_layer_below_it() -> None:
    importers = sorted(s for s, t in _tasks_imports().items() if "tasks.cli" in t)
    assert importers == [], importers
