"""Imports point one way (DESIGN §1). A module may import only from layers below its own."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "baton_nb"

# Lowest first. A module may import modules of its own layer or lower ones.
LAYERS: list[set[str]] = [
    {"_usage", "_errors", "_jsonutil", "_outcomes", "_dburl", "_graph", "_money", "_counts"},
    {"pricing"},
    {"llm"},
    {"events"},
    {"store"},
    {"_run", "reports"},
    {"_watch", "_query", "_prune", "widget"},
    {"runtime"},
    {"_builder"},
    {"cli", "__init__", "__main__"},
]
RULES = {
    # Explicit promises of DESIGN §1, on top of the layer order.
    "pricing": {"runtime", "store", "events", "widget", "reports", "llm", "_builder"},
    "llm": {"runtime", "store", "events", "widget", "reports", "_builder"},
    "widget": {"runtime", "_builder"},
    "reports": {"runtime", "widget", "_builder"},
    "_builder": {"store"},
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
