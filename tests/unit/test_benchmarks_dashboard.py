"""BENCHMARKS.md is a dashboard (issue 25, item 5): one section per measure, replaced where it stands by the
script that measures it, never appended twice."""

from __future__ import annotations

import re
import sys
from collections import Counter

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import _common as C  # noqa: E402


def _titles(text: str) -> list[str]:
    return re.findall(r"(?m)^## (.+)$", text)


def test_a_rerun_replaces_its_section_where_it_stands(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "BENCHMARKS_MD", tmp_path / "BENCHMARKS.md")
    C.write_result("P1: first", "| a |\n|---|\n| 1 |", ["old note"])
    C.write_result("P2: second", "| b |\n|---|\n| 2 |")
    C.write_result("P1: first", "| a |\n|---|\n| 3 |", ["new note"])
    text = C.BENCHMARKS_MD.read_text()
    assert text.startswith(C.HEADER.split("\n")[0]) and _titles(text) == ["P1: first", "P2: second"]
    assert "| 3 |" in text and "new note" in text and "| 1 |" not in text and "old note" not in text
    assert text.count("Command (from the repository root)") == 2 and "Machine: " in text
    assert not list(tmp_path.glob("*.tmp"))


def test_the_shipped_file_holds_each_measure_once():
    path = REPO / "BENCHMARKS.md"
    if not path.exists():
        pytest.skip("no BENCHMARKS.md in this checkout")
    repeated = {t: n for t, n in Counter(_titles(path.read_text(encoding="utf-8"))).items() if n > 1}
    assert not repeated, f"sections written more than once (rerun the script instead of appending): {repeated}"
