"""The architecture's rules that import-linter's contracts (pyproject.toml, run by .ci/run) cannot say:
no import cycles anywhere, no reaching into another module's private names, no SQL outside the store, and
the service layer and composition root used only from the top."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("director", "agent", "boshlab", "cli")
SQL = re.compile(r"\b(SELECT\s.+?\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b",
                 re.I | re.S)


def sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """A cycle of module imports, if there is one (iterative DFS over the import graph)."""
    colour: dict[str, int] = {}
    for start in sorted(modules):
        if colour.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph.find_modules_directly_imported_by(start) & modules))]
        path = [start]
        colour[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if colour.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not colour.get(nxt):
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.find_modules_directly_imported_by(nxt) & modules)))
    return None


def test_no_import_cycles_anywhere() -> None:
    graph = grimp.build_graph(*PACKAGES)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert len(modules) > 50
    cycle = find_cycle(graph, modules)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="c")
    assert find_cycle(graph, {"a", "b", "c"}) is None
    graph.add_import(importer="c", imported="a")
    assert find_cycle(graph, {"a", "b", "c"}) is not None


def private_reach_ins(path: Path) -> list[str]:
    """``x._name`` where x is not self/cls/super(), and ``from m import _name`` of another module."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            if isinstance(owner, ast.Name) and owner.id in ("os", "sys"):   # os._exit, sys._getframe: the stdlib's API
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} import {alias.name}")
    return found


def test_no_module_reaches_into_private_names() -> None:
    found = [f for p in sources(*PACKAGES) for f in private_reach_ins(p)]
    assert found == []


def test_private_reach_in_detector_sees_one(tmp_path: Path) -> None:
    bad = ROOT / "director" / "__probe_private.py"
    try:
        bad.write_text("def f(cpi: object) -> object:\n    return cpi._docker()\n")
        assert private_reach_ins(bad) == ["director/__probe_private.py:2 ._docker"]
    finally:
        bad.unlink()


@pytest.mark.parametrize("path", sources("director", "agent", "boshlab", "cli"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sql_only_in_the_store(path: Path) -> None:
    if path.is_relative_to(ROOT / "director" / "store"):
        return
    strings = [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)]
    assert [s for s in strings if SQL.search(s)] == []


def test_the_store_is_where_sql_lives() -> None:
    text = "\n".join(p.read_text() for p in sources("director") if p.is_relative_to(ROOT / "director" / "store"))
    assert len(SQL.findall(text)) > 20


def importers_of(graph: grimp.ImportGraph, module: str) -> set[str]:
    return {m for m in graph.find_modules_that_directly_import(module)}


def test_the_service_layer_and_the_composition_root_are_used_from_the_top_only() -> None:
    """No part receives the whole director: only the HTTP layer, the workshop and the composition root use
    the service layer; only the entry point builds the composition root."""
    graph = grimp.build_graph(*PACKAGES)
    assert importers_of(graph, "director.lab") <= {"director.__main__"}
    allowed = {"director.lab", "director.workshop", "director.__main__",
               "director.faults"} | {     # a service beside operations: its errors and instance lookup, not the object
        m for m in graph.modules if m.startswith("director.api")}
    assert importers_of(graph, "director.operations") <= allowed
    assert importers_of(graph, "director.operations")   # the check itself looks at something
