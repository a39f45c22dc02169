"""Imports point one way (DESIGN §1). A module may import only from layers below its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "baton_nb"

# Lowest first. A module may import modules of its own layer or lower ones.
LAYERS: list[set[str]] = [
    {
        "_usage",
        "_errors",
        "_jsonutil",
        "_outcomes",
        "_dburl",
        "_graph",
        "_dep_types",
        "_money",
        "_counts",
        "_states",
        "_gc",
        "_owners",
        "_detach",
    },
    {"pricing"},
    {"llm"},
    {"events"},
    {"store"},
    {"_runview", "_run", "reports"},
    {"_watch", "_query", "_prune", "widget"},
    {"runtime"},
    {"_builder", "_workers_front"},
    {"cli", "__init__", "__main__"},
]
RULES = {
    # Explicit promises of DESIGN §1, on top of the layer order.
    "pricing": {"runtime", "store", "events", "widget", "reports", "llm", "_builder"},
    "llm": {"runtime", "store", "events", "widget", "reports", "_builder"},
    "widget": {"runtime", "_builder"},
    "reports": {"runtime", "widget", "_builder"},
    "_builder": {"store"},
    # The runtime shows nothing itself: the front end (the builder) attaches the views.
    "runtime": {"widget", "reports"},
}


def _component(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _layer(component: str) -> int:
    for index, layer in enumerate(LAYERS):
        if component in layer:
            return index
    raise AssertionError(f"baton_nb/{component} is in no layer of tests/unit/test_layering.py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(PACKAGE).parts[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("baton_nb."):
                    found.add(alias.name.split(".")[1])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("baton_nb."):
                    found.add(node.module.split(".")[1])
                continue
            base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                found.add(parts[0].removesuffix(".py"))
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_imports_point_down() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = _component(path)
        for target in _imports(path) - {mine}:
            if not (PACKAGE / target).exists() and not (PACKAGE / f"{target}.py").exists():
                continue
            if _layer(target) > _layer(mine):
                problems.append(f"{path.relative_to(PACKAGE)} imports {target} (a higher layer)")
            if target in RULES.get(mine, set()):
                problems.append(f"{path.relative_to(PACKAGE)} must not import {target}")
    assert not problems, "\n".join(problems)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at any depth (in functions too), but
    not under ``if TYPE_CHECKING:`` (never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        found.update(t for t in targets if t in modules and t != name)
    # importing a package runs its __init__, which may import its children: an edge, but
    # a module importing one of its own parent packages is not a cycle of code
    return {t for t in found if not name.startswith(t + ".")}


def test_no_import_cycles() -> None:
    """No module imports, directly or through others, a module that imports it back."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: _module_imports(path, set(paths)) for name, path in paths.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
