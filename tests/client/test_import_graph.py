"""The page's modules import each other without a cycle: an ES module cycle makes
evaluation order depend on which module loads first (a binding read too early
is a TDZ error), and it hides which module owns what."""

from __future__ import annotations

import re
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "client"
# `import ... from "./x.js"` (also across lines) and `import "./x.js"`; `export ... from` re-exports too.
_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;'"]*?(?:\bfrom\s*)?["']\./([\w.-]+\.js)["']""", re.M | re.S)


def import_graph(folder: Path = CLIENT) -> dict[str, list[str]]:
    """Each module of `folder` and the local modules it imports."""
    return {p.name: _IMPORT.findall(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.js"))}


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for dep in graph.get(node, []):
            found = visit(dep)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for start in graph:
        found = visit(start)
        if found:
            return found
    return None


def test_the_parser_sees_the_page_imports() -> None:
    graph = import_graph()
    assert "state.js" in graph["run-sync.js"]
    assert "alert-panel.js" in graph["run-sync.js"]  # a multi-line import list
    for deps in graph.values():
        for dep in deps:
            assert dep in graph, f"{dep} is imported but not in client/"


_NAMED = re.compile(r"""^\s*import\s*\{([^}]*)\}\s*from\s*["']\./([\w.-]+\.js)["']""", re.M)
_EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|class|const|let)\s+([\w$]+)", re.M)


def test_every_imported_name_is_exported() -> None:
    """A name imported but not exported stops the whole page at link time, before any module runs."""
    exports = {p.name: set(_EXPORT.findall(p.read_text(encoding="utf-8"))) for p in CLIENT.glob("*.js")}
    for path in sorted(CLIENT.glob("*.js")):
        for names, target in _NAMED.findall(path.read_text(encoding="utf-8")):
            for name in (n.split(" as ")[0].strip() for n in names.split(",")):
                assert not name or name in exports[target], f"{path.name} imports {name} that {target} does not export"


def test_a_cycle_is_found() -> None:
    assert find_cycle({"a.js": ["b.js"], "b.js": ["c.js"], "c.js": ["a.js"]}) == ["a.js", "b.js", "c.js", "a.js"]
    assert find_cycle({"a.js": ["b.js", "c.js"], "b.js": ["c.js"], "c.js": []}) is None


def test_the_client_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
