"""The stages' contracts (``synth.pipeline.stages``): what each reads is opened with the context or written by a
stage before it, every report section it fills is a ``RunReport`` field, and the probe's stages read only what
the probe's own stages (and its stand-in for ``load``) write. ``run_stages`` holds a stage to its declaration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from synth.pipeline.context import OPENED, RunContext
from synth.report.run import RunReport
from synth.pipeline.stages import PROBE_MAY_BRING, PROBE_STAGES, PROBE_SUPPLIES, STAGES, Stage, run_stages
from synth.recipe import load_recipe
from tests.conftest import REPO

FIELDS = {f.name: f for f in dataclasses.fields(RunContext)}
BY_NAME = {s.name: s for s in STAGES}


def _empty_by_default(name: str) -> bool:
    f = FIELDS[name]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return default is None or default in ("", 0, False) or (hasattr(default, "__len__") and len(default) == 0)


def _check_chain(stages: list[Stage], available: set[str]) -> list[str]:
    """Each problem as one line: a read nothing before it wrote, an optional read nothing before it writes."""
    problems = []
    for stage in stages:
        for name in stage.reads:
            if name not in available:
                problems.append(f"{stage.name} reads {name}, which no stage before it writes")
        for name in stage.optional:
            if not _empty_by_default(name):
                problems.append(f"{stage.name} reads {name} optionally, but it has a value before any stage ran")
        available |= set(stage.writes)
    return problems


def test_every_declared_name_is_a_field_and_no_stage_writes_what_the_context_opens():
    for stage in STAGES:
        for name in (*stage.reads, *stage.optional, *stage.writes):
            assert name in FIELDS, f"{stage.name} declares {name!r}, which RunContext does not have"
        assert not set(stage.writes) & set(OPENED), f"{stage.name} writes a field open_context opens"
        assert not set(stage.reads) & set(OPENED), f"{stage.name} declares a read of an opened field"
    assert len(BY_NAME) == len(STAGES), "two stages share a name"


def test_the_reads_and_writes_chain_over_all_stages():
    assert _check_chain(list(STAGES), set(OPENED)) == []
    written = {name for s in STAGES for name in s.writes}
    for stage in STAGES:  # an optional read is of something a stage before it writes (or the probe brings)
        earlier = {name for s in STAGES[: STAGES.index(stage)] for name in s.writes} | set(PROBE_MAY_BRING)
        for name in stage.optional:
            assert name in earlier, f"{stage.name} optionally reads {name}, written by no stage before it"
    # nothing handed on is written by no stage at all (a dead field)
    handed_on = set(FIELDS) - set(OPENED)
    assert handed_on - written == set()


@pytest.mark.parametrize("recipe_path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_chain_holds_for_each_shipped_recipes_own_stages(recipe_path: Path, tmp_path: Path):
    """The stages a recipe has (``Stage.applies``) still form a chain: a stage that applies never needs a field
    only a stage that does not apply writes."""
    overrides = []
    if "zero_label" in recipe_path.stem:  # its source is a user's folder of documents
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "a.txt").write_text("a document about something")
        overrides = [f"source.path={docs}"]
    try:
        recipe = load_recipe(recipe_path, overrides)
    except Exception as exc:  # the shared data the recipe names is absent here
        pytest.skip(f"{recipe_path.name} does not load here: {exc}")
    applied = [s for s in STAGES if s.applies(recipe)]
    assert _check_chain(applied, set(OPENED)) == []
    if recipe.output.format != "pairs":  # every mining recipe is one the probe can run
        probe = [s for s in applied if s.name in PROBE_STAGES]
        assert _check_chain(probe, set(OPENED) | set(PROBE_SUPPLIES)) == []


def test_every_report_section_a_stage_writes_is_a_run_report_field():
    fields = set(RunReport.model_fields)
    for stage in STAGES:
        for section in stage.sections:
            assert section in fields, f"{stage.name} writes report section {section!r}, not a RunReport field"


def test_the_probes_stages_read_only_what_probe_stages_write():
    assert set(PROBE_STAGES) <= set(BY_NAME)
    order = [s.name for s in STAGES]
    assert list(PROBE_STAGES) == sorted(PROBE_STAGES, key=order.index), "the probe runs its stages in run order"
    probe = [BY_NAME[name] for name in PROBE_STAGES]
    assert _check_chain(probe, set(OPENED) | set(PROBE_SUPPLIES)) == []
    # ... and the probe's stand-in for load is load's own contract (synth.pipeline.stages.load.adopt_source)
    assert set(PROBE_SUPPLIES) == set(BY_NAME["load"].writes)
    # when it brings its own embeddings and skips embed, the rest still chains
    rest = [BY_NAME[name] for name in PROBE_STAGES if name != "embed"]
    assert _check_chain(rest, set(OPENED) | set(PROBE_SUPPLIES) | set(PROBE_MAY_BRING)) == []


def test_a_chain_with_a_read_nothing_wrote_is_caught():
    """The check above can fail: a stage that reads the mined picks before mining is reported."""
    early = dataclasses.replace(BY_NAME["select"], name="early_select")
    problems = _check_chain([BY_NAME["load"], early, BY_NAME["mine"]], set(OPENED))
    assert "early_select reads mined, which no stage before it writes" in problems
    assert "early_select reads pairs, which no stage before it writes" in problems


def test_run_stages_stops_a_stage_that_sets_what_it_did_not_declare(monkeypatch):
    import synth.pipeline.stages as stages

    def sneaky(ctx):
        ctx.pairs = object()  # declared: writes nothing
        return {"rows": 0}

    def loud(ctx):
        ctx.report["mining"] = {}  # declared: no section
        return {"rows": 0}

    ctx = RunContext(recipe=None)
    for fn, what in ((sneaky, "pairs"), (loud, "mining")):
        monkeypatch.setattr(stages, "STAGES", (Stage("sneaky", fn, lambda r: True),))
        with pytest.raises(RuntimeError, match=f"stage 'sneaky' set {what}, which its Stage does not declare"):
            run_stages(ctx)
    honest = Stage("honest", sneaky, lambda r: True, writes=("pairs",))
    monkeypatch.setattr(stages, "STAGES", (honest,))
    run_stages(ctx)
    assert ctx.timings["honest"]["rows"] == 0


def test_dry_versions_exist_exactly_for_the_stages_a_dry_run_needs():
    """A dry run plans LLM requests: the stages that send them or make their inputs have a dry version, the
    stages that need the embedder or write output have none."""
    with_dry = {s.name for s in STAGES if s.dry is not None}
    assert with_dry == {"load", "personas", "synthetic_queries", "filter_queries", "pairs", "synthetic_negatives"}
