"""No test waits for ever: every subprocess call and every ``.wait()`` / ``.communicate()`` / ``.join()`` in tests/
and benchmarks/ passes a time limit (a hung child then fails its test with subprocess's "timed out after N
seconds" instead of stalling CI). Checked on the source, so a new test cannot slip one in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output"}
WAITS = {"wait", "communicate", "join"}  # Popen.wait/communicate, Event.wait, Thread.join, Queue.join


def _unbounded(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name, keywords = node.func.attr, {k.arg for k in node.keywords}
        owner = node.func.value
        if name in SUBPROCESS_CALLS and isinstance(owner, ast.Name) and owner.id == "subprocess":
            if "timeout" not in keywords:
                lines.append(node.lineno)
        elif name in WAITS and not node.args and "timeout" not in keywords:
            if isinstance(owner, ast.Constant) or (isinstance(owner, ast.Attribute) and owner.attr == "path"):
                continue  # "".join(...) has args anyway; os.path.join too
            lines.append(node.lineno)
    return sorted(lines)


def _sources() -> list[Path]:
    return sorted(p for d in ("tests", "benchmarks") for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_wait_has_a_time_limit(path):
    bad = _unbounded(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    assert not bad, f"{path.relative_to(ROOT)}: waits with no timeout at lines {bad} (pass timeout=...)"


def test_the_check_finds_an_unbounded_wait():
    src = "import subprocess\nsubprocess.run(['x'])\np.wait()\nsubprocess.run(['x'], timeout=5)\np.wait(5)\n"
    assert _unbounded(ast.parse(src)) == [2, 3]
