"""``mine``: each pair's ranked candidates from the index, sampled by the recipe's sampler (``synth.mine``),
with the backfill that selection asks for more from later (``synth.select.backfill``)."""

from __future__ import annotations

from synth.formats.rows import score_summary
from synth.mine import backfill_for
from synth.mine import mine as mine_pairs
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, mines


def run(ctx: RunContext) -> dict:

    recipe, data = ctx.recipe, ctx.data
    if ctx.query_emb is None or len(ctx.query_emb) != len(data.queries):  # the probe may bring its own
        ctx.query_emb = ctx.embed_queries(data.queries.texts)
    block = recipe.index.query_block
    if recipe.mine.backfill_depth != 0:
        ctx.backfill = backfill_for(data, ctx.pairs, ctx.corpus_emb, ctx.query_emb, ctx.searcher, recipe.mine, block)
    ctx.mined, stats = mine_pairs(
        data, ctx.pairs, ctx.corpus_emb, ctx.query_emb, ctx.searcher, recipe.mine, block, recipe.seed, ctx.backfill
    )
    ctx.report["index"] = ctx.searcher.info.as_dict()
    ctx.report["mining"] = stats.as_dict()
    if stats.positive_copies or stats.positive_near_duplicates:  # a positive under another id: say so
        ctx.notices.append(
            f"the corpus holds {stats.positive_copies} exact copies and {stats.positive_near_duplicates} "
            "near-duplicates (case, spacing, punctuation) of positives under other ids, counted per query; "
            "none was mined as its query's negative"
        )
    ctx.report["scores"] = {"space": recipe.index.metric, **score_summary(ctx.mined)}
    return {"rows": len(ctx.pairs)}


STAGE = Stage(
    "mine",
    run,
    mines,
    reads=("data", "pairs", "corpus_emb", "searcher"),
    optional=("query_emb",),  # the probe may bring its own
    writes=("query_emb", "backfill", "mined"),
    sections=("index", "mining", "scores"),
)
