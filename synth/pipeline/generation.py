"""The generation stages of a run (personas -> synthetic queries -> their filters -> synthetic negatives)
and the versions a dry run uses instead (``Stage.dry`` in ``synth.pipeline.stages``): the LLM stages run as
they are over the dry run's planning client; the stages that need the embedder stand in for it.
The generation code lives in ``synth.generate`` (``synth.generate.stages`` wires it to a run's data).
"""

from __future__ import annotations

from synth.pipeline.context import RunContext


def personas(ctx: RunContext) -> dict:
    from synth.generate import stages as syn_stages

    syn_stages.personas_stage(ctx.recipe, ctx.data, ctx.client, ctx.prompts, ctx.syn)
    return {"rows": len(ctx.syn.personas)}


def synthetic_queries(ctx: RunContext) -> dict:
    from synth.generate import stages as syn_stages

    syn_stages.queries_stage(ctx.recipe, ctx.data, ctx.client, ctx.prompts, ctx.syn)
    return {"rows": len(ctx.syn.candidates)}


def filter_queries(ctx: RunContext) -> dict:
    from synth.generate import stages as syn_stages

    ctx.open_encoder()
    syn_stages.filter_stage(ctx.recipe, ctx.data, ctx.syn, ctx.embed_queries, ctx.corpus_emb, ctx.searcher)
    syn_stages.add_synthetic_pairs(ctx.data, ctx.syn.kept)
    return {"rows": len(ctx.syn.kept)}


def all_queries(ctx: RunContext) -> dict:
    """The dry run's ``filter_queries``: no embedder, no index; every candidate is kept (at most as long
    as the filters allow), so the negatives are planned for as many pairs as the run can have."""
    from synth.generate import stages as syn_stages

    syn_stages.unfiltered_stage(ctx.recipe, ctx.syn)
    syn_stages.add_synthetic_pairs(ctx.data, ctx.syn.kept)
    return {"rows": len(ctx.syn.kept)}


def synthetic_negatives(ctx: RunContext) -> dict:
    from synth.generate import stages as syn_stages

    ctx.open_encoder()
    syn_stages.negatives_stage(ctx.recipe, ctx.data, ctx.client, ctx.prompts, ctx.syn, ctx.embed_passages)
    return {"rows": len(ctx.syn.negatives)}


def generate_negatives(ctx: RunContext) -> dict:
    """The dry run's ``synthetic_negatives``: the LLM requests only (their filters need the embedder)."""
    from synth.generate import stages as syn_stages

    syn_stages.generate_negatives_stage(ctx.recipe, ctx.data, ctx.client, ctx.prompts, ctx.syn)
    return {"rows": len(ctx.syn.negatives)}


def zero_label_notice(recipe) -> str:
    """The one line a zero-label run (a source with no queries) prints, in the report and on the card."""
    judge = (
        "the false-negative judge has no query with two labelled positives to hide one of and learn from, so "
        "fn_risk falls back to its positive-aware margin filter (a candidate scoring close to or above the "
        "query's own positive is flagged)"
        if recipe.judge is not None
        else "no judge checks the mined negatives (add judge: with judges/fn_risk.yaml)"
    )
    return (
        "zero-label source (documents only): each synthetic query's one positive is the chunk it was written "
        f"from; {judge}; the miner never picks that chunk, the other chunks of its document or copies of it"
    )
