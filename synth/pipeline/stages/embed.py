"""``embed``: the corpus through the run's embedder, chunk by chunk through the embedding cache
(``synth.embed``), so a killed run re-embeds nothing it finished."""

from __future__ import annotations

from synth.embed import embed_texts
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, needs_index


def run(ctx: RunContext) -> dict:

    cfg = ctx.recipe.embed
    ctx.corpus_emb = embed_texts(
        ctx.open_encoder(),
        ctx.data.corpus.texts,
        cfg.passage_prompt,
        cfg.cache_dir,
        cfg.chunk_rows,
        "corpus",
        ctx.embed_stats,
    )
    return {"rows": len(ctx.data.corpus)}


STAGE = Stage("embed", run, needs_index, reads=("data",), writes=("corpus_emb",))
