"""The runtime's import graph has no cycle, and the local controller does not import the Ray one
(nexrl_runtime/launch.py picks between them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def import_graph() -> dict[str, set[str]]:
    """Module -> the nexrl_runtime modules it imports anywhere (function-level imports included)."""
    files = {}
    for f in (ROOT / "nexrl_runtime").rglob("*.py"):
        name = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = f
    graph: dict[str, set[str]] = {}
    for name, f in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps.update(t for t in targets if t in files and t != name)
        graph[name] = deps
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for dep in graph[stack.pop()] - seen:
            seen.add(dep)
            stack.append(dep)
    return seen


def test_no_import_cycle() -> None:
    graph = import_graph()
    on_a_cycle = sorted(name for name in graph if name in reachable(graph, name))
    assert on_a_cycle == []


def test_controller_does_not_import_distributed() -> None:
    assert not [m for m in reachable(import_graph(), "nexrl_runtime.controller") if ".distributed" in m]
    check = (
        "import sys, nexrl_runtime.controller; "
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('nexrl_runtime.distributed')]"
    )
    subprocess.run([sys.executable, "-c", check], check=True, cwd=ROOT)
