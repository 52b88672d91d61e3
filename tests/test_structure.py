"""The package's architecture, checked on the source with ``ast``: no import cycles (module level or
inside functions), and every module in a layer that imports downward only: the base (errors, log,
config, defaults), then method, data, training, evaluation, and on top the pipeline, the sweep, the
Python API and the CLI. No module is exempt."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "fastclr"

# Every module sits in one layer and imports only its own layer or lower ones, low to high. No module is
# left out (a package that spans layers, like a modality, has no place: its parts go in the layers).
LAYERS = (
    ("base", ("fastclr.errors", "fastclr.log", "fastclr.config", "fastclr.defaults")),
    ("method", ("fastclr.method",)),
    ("data", ("fastclr.data",)),
    ("train", ("fastclr.train",)),
    ("eval", ("fastclr.eval",)),
    ("top", ("fastclr.pipeline", "fastclr.sweep", "fastclr.api", "fastclr.cli", "fastclr.__main__", "fastclr")),
)


def layer_of(name: str) -> int | None:
    """The rank of ``name``'s layer (0: base ... 5: top), None for a module in no layer."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or (p != "fastclr" and name.startswith(p + ".")) for p in prefixes):
            return rank
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every fastclr module ``name`` imports, anywhere in its source (functions included)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # fastclr.train.dist.mean -> fastclr.train.dist
                target = target.rpartition(".")[0]
            if target and target != name and target != "fastclr":
                found.add(target)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checker_finds_cycles_and_reads_function_level_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert "fastclr.train.dist" in GRAPH["fastclr.train.loop"]
    assert len(MODULES) > 40 and all(name.startswith("fastclr") for name in MODULES)


def test_no_import_cycles():
    assert find_cycle(GRAPH) is None


def test_every_module_has_a_layer():
    assert not [name for name in MODULES if layer_of(name) is None]


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_layers_import_downward_only(layer):
    """Module- and function-level imports alike: the graph reads both."""
    rank = [name for name, _ in LAYERS].index(layer)
    wrong = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if layer_of(name) == rank
        for target in targets
        if (layer_of(target) or 0) > rank
    )
    assert not wrong, wrong


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("fastclr.config") < layer_of("fastclr.data.datasets") < layer_of("fastclr.cli")
    assert layer_of("fastclr.text.views") is None and layer_of("fastclr.method.text_views") == 1


def test_documents_cited_in_the_code_ship_with_it():
    """A docstring may cite the paper or a document of this repository, never one that is not in it."""
    cited = {
        (path.relative_to(ROOT), name)
        for path in (SRC / "fastclr").rglob("*.py")
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text())
    }
    assert cited, "the pattern finds nothing: the check would pass vacuously"
    missing = sorted(f"{path}: {name}" for path, name in cited if not (ROOT / name).is_file())
    assert not missing, missing


MAX_FUNCTION_LINES = 60


def test_functions_fit_on_a_screen():
    """No function or method longer than MAX_FUNCTION_LINES lines, its docstring included."""
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long, long
