"""The shape of the house, measured from the source: the import graph of ``synth/`` (function-local imports
included), its cycles, the arrows that run back up, and the size figures the architecture review reports.

A *room* is a top-level module of ``synth`` or one of its packages (``synth/judge/`` is one room, as in
``../shared/design/REVIEW.md``). An arrow A -> B means a module of A imports a module of B. An arrow *runs back
up* when it closes a loop between rooms: B already reaches A, so neither sits above the other. ``synth/__init__.py``
(the public API) is its own room, above everything. Run ``python -m tests.support.house`` for the table.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "synth"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def room_of(module: str) -> str:
    """``synth.judge.cascade`` -> ``synth.judge``; ``synth.mine`` -> ``synth.mine``; ``synth`` -> ``synth``."""
    parts = module.split(".")
    if len(parts) <= 2:
        return module
    return ".".join(parts[:2])


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # synth modules this one imports
    local_imports: int = 0  # imports of synth's own modules inside a function
    long_functions: list[tuple[int, str]] = field(default_factory=list)  # (lines, name) for >= 60 lines


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def scan(package: Path = PACKAGE) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    paths = sorted(package.rglob("*.py"))
    known = {module_name(p) for p in paths}
    for path in paths:
        name = module_name(path)
        text = path.read_text()
        tree = ast.parse(text)
        mod = Module(name, path, len(text.splitlines()))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = fn.end_lineno - fn.lineno + 1
                if length >= 60:
                    mod.long_functions.append((length, fn.name))
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and _targets(name, path, node, known):
                        mod.local_imports += 1
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod.imports |= _targets(name, path, node, known)
        mod.imports.discard(name)
        modules[name] = mod
    return modules


def _targets(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        candidates = [a.name for a in node.names]
    else:
        base = _resolve(name, node, path.name == "__init__.py")
        candidates = [base] + [f"{base}.{a.name}" for a in node.names]
    for cand in candidates:
        while cand and cand not in known:
            cand = cand.rpartition(".")[0]
        if cand.startswith("synth"):
            found.add(cand)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def room_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for mod in modules.values():
        src = room_of(mod.name)
        graph.setdefault(src, set())
        for target in mod.imports:
            dst = room_of(target)
            if dst != src:
                graph[src].add(dst)
    return graph


def back_arrows(modules: dict[str, Module]) -> list[tuple[str, str]]:
    """File-level arrows (A file -> B file) whose rooms sit in one loop: the arrows that run back up."""
    rooms = room_graph(modules)
    loops = [set(c) for c in cycles(rooms)]
    found = []
    for mod in modules.values():
        src = room_of(mod.name)
        for target in sorted(mod.imports):
            dst = room_of(target)
            if dst != src and any(src in loop and dst in loop for loop in loops):
                # within a loop, the arrows into the room that every other member reaches count as back up:
                # report both directions; the reader sees the loop.
                found.append((mod.name, target))
    return found


def recipe_importers(modules: dict[str, Module]) -> list[str]:
    """Feature modules (not the run's orchestration) that import ``synth.recipe``."""
    allowed = ("synth", "synth.cli", "synth.pipeline", "synth.evaluate", "synth.recipe", "synth.assets")
    return sorted(m.name for m in modules.values() if "synth.recipe" in m.imports and room_of(m.name) not in allowed)


def figures(modules: dict[str, Module]) -> dict[str, int]:
    file_graph = {m.name: set(m.imports) for m in modules.values()}
    return {
        "modules": len(modules),
        "lines": sum(m.lines for m in modules.values()),
        "functions >= 60 lines": sum(len(m.long_functions) for m in modules.values()),
        "modules > 400 lines": sum(m.lines > 400 for m in modules.values()),
        "function-local imports of synth": sum(m.local_imports for m in modules.values()),
        "file-level cycles": len(cycles(file_graph)),
        "room-level loops": len(cycles(room_graph(modules))),
        "arrows back up": len(back_arrows(modules)),
        "feature modules importing recipe.py": len(recipe_importers(modules)),
    }


def main() -> None:
    modules = scan()
    for key, value in figures(modules).items():
        print(f"| {key} | {value} |")
    print()
    for src, dst in back_arrows(modules):
        print(f"back up: {src} -> {dst}")
    for name in recipe_importers(modules):
        print(f"imports recipe.py: {name}")
    for mod in sorted(modules.values(), key=lambda m: -m.lines):
        if mod.lines > 400:
            print(f"over 400 lines: {mod.path.relative_to(ROOT)} {mod.lines}")
    for mod in modules.values():
        for length, fn in mod.long_functions:
            print(f"long function: {length} {mod.path.relative_to(ROOT)}:{fn}")


if __name__ == "__main__":
    main()
