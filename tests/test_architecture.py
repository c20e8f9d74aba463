"""The package's imports against the floors drawn in docs/architecture.md: no cycle, nothing up.

The floors are written once, in the drawing; this test reads them from there, so the page and the
code cannot drift apart. Every import counts, including those inside functions (a lazy import is
still a dependency); only the package facade (``bulkimport/__init__.py``) stands above the floors.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRAWING = ROOT / "docs" / "architecture.md"
#: a package place that imports nothing from the rest of bulkimport
ISOLATED = {"sandbox"}


def floors() -> dict[str, int]:
    """place ("cli", "portal", …) → floor number, read from the drawing."""
    text = DRAWING.read_text(encoding="utf-8")
    block = text.split("<!-- layers:begin -->", 1)[1].split("<!-- layers:end -->", 1)[0]
    out: dict[str, int] = {}
    for line in block.splitlines():
        found = re.match(r"^\s*(\d+)\s+(.+)$", line)
        if not found:
            continue
        for name in found.group(2).split():
            place = name.rstrip("/")
            assert place not in out, f"{place} is drawn on two floors"
            out[place] = int(found.group(1))
    assert out, "no floors found between the layers markers of docs/architecture.md"
    return out


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package below ``root`` by its dotted name."""
    return {module_name(p, root): p for p in sorted((root / "bulkimport").rglob("*.py"))}


def place_of(module: str) -> str | None:
    """The place a module belongs to: its first component below ``bulkimport`` (None: the facade)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def imports(path: Path, root: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported bulkimport module, line) for every import in ``path``, relative ones resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "bulkimport":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "bulkimport":
                continue
            for alias in node.names:  # ``from . import codes`` imports the module bulkimport.codes
                sub = f"{target}.{alias.name}"
                yield (sub if sub in known else target), node.lineno


def upward_imports(root: Path) -> list[str]:
    """Every import below ``root`` that goes up a floor, leaves the sandbox or reaches the facade."""
    drawn = floors()
    found = modules(root)
    wrong: list[str] = []
    for name, path in found.items():
        here = place_of(name)
        if here is None:  # the facade stands above every floor
            continue
        for target, line in imports(path, root, set(found)):
            there = place_of(target)
            where = f"{path.relative_to(root)}:{line} {name}"
            if there is None:
                wrong.append(f"{where} imports the package facade ({target})")
            elif there == here:
                continue
            elif here in ISOLATED or (there in ISOLATED and drawn[there] >= drawn[here]):
                wrong.append(f"{where} -> {target} (the sandbox stands apart)")
            elif drawn[there] > drawn[here]:
                wrong.append(f"{where} (floor {drawn[here]}) -> {target} (floor {drawn[there]})")
    return wrong


def cycles(root: Path) -> list[list[str]]:
    """Import cycles among the package's modules (the facade aside: it imports nothing eagerly)."""
    found = modules(root)
    graph = {
        name: {t for t, _ in imports(path, root, set(found)) if t not in (name, "bulkimport")}
        for name, path in found.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    out: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                out.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return out


def test_every_module_of_the_package_has_a_place_in_the_drawing():
    drawn = floors()
    names = modules(ROOT)
    missing = sorted({p for m in names if (p := place_of(m)) and p not in drawn})
    assert not missing, f"drawn on no floor of docs/architecture.md: {missing}"
    ghosts = sorted(p for p in drawn if not any(place_of(m) == p for m in names))
    assert not ghosts, f"docs/architecture.md draws places the package does not have: {ghosts}"


def test_no_import_goes_up_a_floor():
    wrong = upward_imports(ROOT)
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(wrong)


def test_no_import_cycle():
    found = cycles(ROOT)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The checks can fail: a ground-floor module importing the CLI, which imports it back."""
    fake = tmp_path / "bulkimport"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "codes.py").write_text("def f():\n    from .cli import main\n")
    (fake / "cli.py").write_text("from . import codes\n")
    (fake / "sandbox").mkdir()
    (fake / "sandbox" / "__init__.py").write_text("from ..errors import InputError\n")
    (fake / "errors.py").write_text("")
    wrong = upward_imports(tmp_path)
    assert any("bulkimport.codes (floor 1) -> bulkimport.cli (floor 9)" in w for w in wrong), wrong
    assert any("bulkimport.sandbox -> bulkimport.errors (the sandbox stands apart)" in w for w in wrong)
    assert ["bulkimport.cli", "bulkimport.codes", "bulkimport.cli"] in cycles(tmp_path)


#: Functions may run to 80 lines and classes to 400; a flat table that must stay whole would be
#: listed here with the reason (none is today).
LONGEST_FUNCTION, LONGEST_CLASS = 80, 400
EXCEPTIONS: dict[str, str] = {}


def test_functions_and_classes_stay_short_enough_to_hold_in_mind():
    too_long: list[str] = []
    for name, path in modules(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            limit = (
                LONGEST_CLASS
                if isinstance(node, ast.ClassDef)
                else LONGEST_FUNCTION
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else None
            )
            if limit is None:
                continue
            lines = node.end_lineno - node.lineno + 1
            where = f"{name}.{node.name}"
            if lines > limit and where not in EXCEPTIONS:
                place = f"{path.relative_to(ROOT)}:{node.lineno}"
                too_long.append(f"{place} {node.name}: {lines} > {limit} lines")
    assert not too_long, "\n".join(too_long)
