"""The layers import only downward and no module imports itself back (read from the source with ast).

model < discretizations < config (the schema composed from their registries, loading, the assembly of a
configuration into its pieces) < storage (checkpoint
files, which read their stored configuration through config) < validation < solver (the run machinery: build,
observers, the Python API, CLI, sweeps, plotting) < mfld (the package's top: api/); mfld.data holds only files.
``python -c "import sys; sys.path.insert(0, 'tests/system'); import test_architecture as a; a.report()"``
prints the graph.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# "mfld" itself (api/: run, load, python -m mfld) sits on top; it comes last, as every name starts with it.
LAYERS = {
    "mfld.model": 0,
    "mfld.discretizations": 1,
    "mfld.config": 2,
    "mfld.storage": 3,
    "mfld.validation": 4,
    "mfld.solver": 5,
    "mfld.data": 0,
    "mfld": 6,
}


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name, from pyproject's package-dir."""
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    out = {}
    for pkg, folder in dirs.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def _targets(mod: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = mod.split(".")[: len(mod.split(".")) - node.level + (path.name == "__init__.py")]
            base = ".".join(pkg + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    out = []
    for name in names:
        while name and name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in known and name != mod:
            out.append(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """``module -> modules of mfld it imports`` (function-level imports included)."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for mod, path in known.items():
        graph[mod] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[mod].update(_targets(mod, path, node, known))
    return graph


def layer(mod: str) -> tuple[str, int]:
    return next((p, rank) for p, rank in LAYERS.items() if mod == p or mod.startswith(p + "."))


def upward(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, bs in graph.items() for b in bs if layer(b)[1] > layer(a)[1])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                found.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return found


def report() -> None:
    graph = import_graph()
    packages: dict[str, set[str]] = {}
    for a, bs in graph.items():
        for b in bs:
            if layer(a)[0] != layer(b)[0]:
                packages.setdefault(layer(a)[0], set()).add(layer(b)[0])
    for p in sorted(packages, key=lambda p: LAYERS[p]):
        print(f"{p} imports {sorted(packages[p], key=lambda q: LAYERS[q])}")
    print(f"modules: {len(graph)}, upward imports: {upward(graph)}, cycles: {cycles(graph)}")


def test_layers_import_only_downward():
    assert upward(import_graph()) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_checker_sees_an_upward_import_and_a_cycle():
    graph = import_graph()
    graph["mfld.model.problem"] = graph["mfld.model.problem"] | {"mfld.solver.build"}
    assert ("mfld.model.problem", "mfld.solver.build") in upward(graph)
    assert any("mfld.model.problem" in c for c in cycles(graph))


def test_every_package_folder_is_installed():
    """A subpackage missing from pyproject's ``packages`` is left out of a non-editable install (``pip install .``)
    while an editable one still finds it: mfld.storage was, once, and only CI's fresh install failed."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = set()
    for pkg, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            folders.add(".".join([pkg, *parts]))
    assert folders <= set(setuptools["packages"]), sorted(folders - set(setuptools["packages"]))
