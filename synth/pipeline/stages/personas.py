"""``personas``: who the synthetic queries are written for (``synth.generate.personas``): a file, the bundled
starters, or personas the LLM writes from sampled documents."""

from __future__ import annotations

from synth.generate.personas import load_personas
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, client_defaults


def run(ctx: RunContext) -> dict:

    recipe = ctx.recipe
    ctx.personas, ctx.report["personas"] = load_personas(
        recipe.personas,
        ctx.data.corpus,
        ctx.client,
        ctx.prompts,
        recipe.seed,
        "personas",
        client_defaults=client_defaults(recipe),
    )
    return {"rows": len(ctx.personas)}


STAGE = Stage(
    "personas",
    run,
    lambda recipe: recipe.personas is not None,
    reads=("data",),
    writes=("personas",),
    sections=("personas",),
    dry=run,
)
