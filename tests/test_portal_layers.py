"""portal/ is a set of leaf modules: its imports (top-level or inside functions) form no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import bulkimport
import bulkimport.portal as portal

PORTAL = Path(portal.__file__).parent


def _portal_imports(path: Path) -> set[str]:
    """The sibling portal modules ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif (node.module or "").startswith("bulkimport.portal."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("bulkimport.portal."))
    return found


def _graph() -> dict[str, set[str]]:
    return {p.stem: _portal_imports(p) for p in PORTAL.glob("*.py") if p.stem != "__init__"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` as a path of module names, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_portal_modules_import_each_other_without_a_cycle():
    graph = _graph()
    assert {"auth", "client", "transport", "answers", "urls", "tokens", "governor"} <= set(graph)
    assert _cycle(graph) is None


def test_auth_and_client_do_not_know_each_other():
    graph = _graph()
    assert "client" not in graph["auth"] and "auth" not in graph["client"]


def test_the_ground_floor_imports_nothing_above_it():
    ground = ["values", "codes", "errors", "clock", "limits", "settings"]
    for name in ground:
        tree = ast.parse((Path(bulkimport.__file__).parent / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                assert node.module in ground, f"{name} imports {node.module}"


def test_package_exports_the_whole_exception_hierarchy():
    from bulkimport import errors

    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, errors.BulkImportError):
            assert getattr(bulkimport, name) is value, name
    assert "TlsError" in bulkimport.__all__
