"""``synthetic_queries``: the LLM writes queries for sampled chunks and personas (``synth.generate.queries``);
with a quality judge, the LLM grades each one before the filters run (a dry run plans those requests too)."""

from __future__ import annotations

from synth.generate.quality import judge_queries
from synth.generate.queries import generate_queries
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, client_defaults


def run(ctx: RunContext) -> dict:

    recipe, corpus = ctx.recipe, ctx.data.corpus
    cfg, defaults = recipe.synthetic_queries, client_defaults(recipe)
    candidates, stats = generate_queries(cfg, corpus, ctx.personas, ctx.client, ctx.prompts, recipe.seed, defaults)
    section = ctx.report["synthetic_queries"] = {"generation": stats}
    if cfg.quality_judge is not None:
        candidates, section["quality_judge"] = judge_queries(
            cfg.quality_judge, candidates, corpus, ctx.client, ctx.prompts, recipe.seed, defaults
        )
    ctx.query_candidates = candidates
    return {"rows": len(candidates)}


STAGE = Stage(
    "synthetic_queries",
    run,
    lambda recipe: recipe.synthetic_queries is not None,
    reads=("data", "personas"),
    writes=("query_candidates",),
    sections=("synthetic_queries",),
    dry=run,
)
