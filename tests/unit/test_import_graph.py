"""The house has no arrow back up (``tests/support/house.py``): no import cycle between modules, no loop between
rooms (a package or a top-level module of synth; function-local imports count), and no feature package imports
the recipe."""

from __future__ import annotations

from tests.support.house import back_arrows, cycles, recipe_importers, room_graph, scan

MODULES = scan()


def test_no_module_imports_itself_round_a_cycle():
    assert cycles({m.name: set(m.imports) for m in MODULES.values()}) == []


def test_no_arrow_runs_back_up_between_rooms():
    assert cycles(room_graph(MODULES)) == []
    assert back_arrows(MODULES) == []


def test_core_imports_nothing_else_of_synth():
    outside = {
        (m.name, target)
        for m in MODULES.values()
        if m.name.startswith("synth.core")
        for target in m.imports
        if not target.startswith("synth.core")
    }
    assert outside == set()


def test_no_feature_package_imports_the_recipe():
    assert recipe_importers(MODULES) == []


def test_the_checks_can_fail():
    """A crafted graph with a loop between two rooms is reported, so the assertions above mean something."""
    graph = {"synth.llm": {"synth.engine"}, "synth.engine": {"synth.llm"}, "synth.core": set()}
    assert cycles(graph) == [["synth.engine", "synth.llm"]]
