"""The stages of a run, in order (``STAGES``): one module each, and each module's ``STAGE`` says what it reads
and writes on the ``RunContext`` and which report sections it fills (``synth.pipeline.stages.base.Stage``).

load -> personas -> synthetic_queries -> embed -> index -> filter_queries -> pairs -> synthetic_negatives ->
mine -> select (judge -> policy -> mix, with backfill) -> leakage -> write.

The feature code lives in its own package (``synth.generate``, ``synth.mine``, ``synth.judge``,
``synth.select``, ``synth.formats``); a stage module only wires it to the run. Who runs them: ``synth run``
(``run_stages(ctx)``: all), ``synth fn-probe`` (``PROBE_STAGES`` on its view of the source), ``synth run
--dry-run`` (each stage's ``dry`` version over a planning LLM pool). A new stage is one module and one line
below.
"""

from __future__ import annotations

from dataclasses import fields

from synth.pipeline.context import OPENED, RunContext
from synth.pipeline.stages import (
    embed,
    filter_queries,
    index,
    leakage,
    load,
    mine,
    pairs,
    personas,
    select,
    synthetic_negatives,
    synthetic_queries,
    write,
)
from synth.pipeline.stages.base import Stage, needs_encoder, needs_index

STAGES: tuple[Stage, ...] = (
    load.STAGE,
    personas.STAGE,
    synthetic_queries.STAGE,
    embed.STAGE,
    index.STAGE,
    filter_queries.STAGE,
    pairs.STAGE,
    synthetic_negatives.STAGE,
    mine.STAGE,
    select.STAGE,
    leakage.STAGE,
    write.STAGE,
)

# The data path the false-negative probe runs on its view of the source (no generation, nothing written). The
# probe writes what ``load`` would itself (``load.adopt_source``).
PROBE_STAGES = ("embed", "index", "pairs", "mine", "select")
PROBE_SUPPLIES = load.STAGE.writes
# ... and the embeddings it may bring from an earlier ``load_and_embed`` (then it skips ``embed``)
PROBE_MAY_BRING = ("corpus_emb", "query_emb")

# The fields the stages hand on; those ``open_context`` opens are resources every stage may use.
HANDED_ON = tuple(f.name for f in fields(RunContext) if f.name not in OPENED)

__all__ = [
    "PROBE_MAY_BRING",
    "PROBE_STAGES",
    "PROBE_SUPPLIES",
    "STAGES",
    "Stage",
    "needs_encoder",
    "needs_index",
    "run_stages",
]


def run_stages(ctx: RunContext, names: tuple[str, ...] | None = None) -> None:
    """Run the recipe's stages (or only ``names`` of them) in order, timing each. A dry-run context
    (``open_context(recipe, dry_run=True)``, whose LLM pool sends nothing) runs each stage's ``dry``. A stage
    that sets a field or a report section it does not declare stops the run: the declarations are what
    ``tests/unit/test_pipeline_stages.py`` checks the chain on, so they must be true."""
    for stage in STAGES:
        fn = stage.dry if ctx.dry_run else stage.run
        if fn is not None and (names is None or stage.name in names) and stage.applies(ctx.recipe):
            before, sections = _identities(ctx), {k: id(v) for k, v in ctx.report.items()}
            with ctx.stage(stage.name) as entry:
                entry.update(fn(ctx))
            _hold_to_declaration(stage, ctx, before, sections)


def _identities(ctx: RunContext) -> dict[str, int]:
    return {name: id(getattr(ctx, name)) for name in HANDED_ON}


def _hold_to_declaration(stage: Stage, ctx: RunContext, before: dict[str, int], sections: dict[str, int]) -> None:
    set_fields = {name for name, ident in _identities(ctx).items() if ident != before[name]}
    set_sections = {k for k, v in ctx.report.items() if sections.get(k) != id(v)}
    undeclared = sorted(set_fields - set(stage.writes)) + sorted(set_sections - set(stage.sections))
    if undeclared:
        raise RuntimeError(f"stage {stage.name!r} set {', '.join(undeclared)}, which its Stage does not declare")
