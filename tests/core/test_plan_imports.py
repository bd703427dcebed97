"""The plan and plugin modules form a DAG by their module-level imports:
``plugins -> entrypoints -> plancache -> plugins`` was a cycle hidden by
imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pipekit

PACKAGE = Path(pipekit.__file__).parent
PLAN_MODULES = {
    "pipekit.plugins._manager",
    "pipekit.plan._plan_cache",
    "pipekit.plan._pipeline",
    "pipekit.plugins._hookspecs",
    "pipekit.engine._decisions",
    "pipekit.plan._config",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The pipekit modules one import statement names (every import, at
    any depth: one inside a function counts as much as one at the top)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith("pipekit")]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.startswith("pipekit"):
        return []
    return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def _type_checking_only(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets.update(
                t for t in _imported(name, path.name == "__init__.py", node) if t in files
            )
        graph[name] = targets - {name, "pipekit"}
    return graph


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        name = todo.pop()
        if name == goal:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return False


def test_no_plan_or_plugin_module_is_in_an_import_cycle() -> None:
    graph = _graph()
    assert "pipekit.plugins._entry_points" not in graph
    in_cycle = sorted(m for m in PLAN_MODULES if _reaches(graph, m, m))
    assert in_cycle == [], in_cycle


def test_the_plugin_manager_does_not_import_the_plan_cache() -> None:
    graph = _graph()
    assert not _reaches(graph, "pipekit.plugins._manager", "pipekit.plan._plan_cache")
    assert _reaches(graph, "pipekit.plan._plan_cache", "pipekit.plugins._manager")
