"""The bus's place in the layering: it imports nothing of `nodes/` or `control/` (ARCHITECTURE rule 3).

Checked on the source, not at run time: every import statement in bus/, at
module level or inside a function, is read with `ast`. The map in
bus/__init__.py is checked too (its run-time edges: imports for annotations
only are left out), so it cannot drift from the code.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import bus

BUS = Path(bus.__file__).resolve().parent
MODULES = sorted(path for path in BUS.glob("*.py"))


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """The statements under `if TYPE_CHECKING:` (imports for annotations, never run)."""
    hidden: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                hidden.update(ast.walk(statement))
    return hidden


def _imports(path: Path, *, at_run_time: bool = False) -> set[str]:
    """Absolute names of everything `path` imports (relative imports resolved inside `bus`).

    With `at_run_time`, imports under `if TYPE_CHECKING:` are left out.
    """
    names = set()
    tree = ast.parse(path.read_text(), str(path))
    hidden = _type_checking_only(tree) if at_run_time else set()
    for node in ast.walk(tree):
        if node in hidden:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = "bus" if node.module is None else f"bus.{node.module}"
                if node.module is None:
                    names.update(f"bus.{alias.name}" for alias in node.names)
                else:
                    names.add(base)
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_bus_imports_nothing_of_the_layers_above(path):
    above = sorted(name for name in _imports(path) if name.split(".")[0] in ("nodes", "control", "launcher", "bench"))
    assert above == [], f"bus/{path.name} imports {above}"


def _documented_map() -> dict[str, set[str]]:
    """{module: bus modules it imports} as bus/__init__.py's table says."""
    table: dict[str, set[str]] = {}
    for line in (bus.__doc__ or "").splitlines():
        words = line.split()
        if "->" not in words:
            if words and words[0] in ("leaves",):
                words = words[1:]
            if words and words[0].endswith(".py") and len(line) - len(line.lstrip()) <= 14:
                table[words[0].rstrip(",")[:-3]] = set()
            continue
        left, right = line.split("->")
        right = re.split(r"\s{2,}", right.strip())[0]  # the description starts after a run of spaces
        targets = {word.strip(",") for word in right.split()}
        for word in left.split():
            if word.rstrip(",").endswith(".py"):
                table[word.rstrip(",")[:-3]] = {t for t in targets if (BUS / f"{t}.py").exists()}
    return table


def test_the_module_map_in_bus_init_matches_the_imports():
    documented = _documented_map()
    assert set(documented) == {path.stem for path in MODULES if path.stem != "__init__"}
    for path in MODULES:
        if path.stem == "__init__":
            continue
        actual = {name.split(".")[1] for name in _imports(path, at_run_time=True) if name.startswith("bus.")}
        assert actual == documented[path.stem], f"bus/{path.name}"
