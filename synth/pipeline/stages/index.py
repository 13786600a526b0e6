"""``index``: the FAISS index over the corpus embeddings (``synth.index.Searcher``: the recipe's factory
string), searched locally or on the engine's workers."""

from __future__ import annotations

from synth.index import Searcher
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, needs_index


def run(ctx: RunContext) -> dict:

    recipe = ctx.recipe
    ctx.searcher = Searcher.from_config(
        recipe.index,
        ctx.corpus_emb,
        recipe.seed,
        top_n=recipe.mine.n_negatives if recipe.mine is not None else 10,  # the n of the reported recall@n
        n_queries=len(ctx.data.queries),
        engine=ctx.engine,
    )
    return {"rows": len(ctx.data.corpus)}


STAGE = Stage("index", run, needs_index, reads=("data", "corpus_emb"), writes=("searcher",))
