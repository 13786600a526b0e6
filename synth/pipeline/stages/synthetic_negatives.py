"""``synthetic_negatives``: the LLM writes hard negatives for (query, positive) pairs (``synth.generate.negatives``;
which pairs: ``synthetic_negatives.pairs``, a seeded sample when ``max_pairs`` caps them), then the filters
drop the ones too close to the positive."""

from __future__ import annotations

import numpy as np

from synth.core.records import SourceData
from synth.core.seeding import stable_key, uniforms
from synth.generate import filters as gen_filters
from synth.generate.negatives import generate_negatives
from synth.generate.records import SyntheticQuery
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, client_defaults

Pair = tuple[str, str, str, str]  # (query_id, query_text, positive_id, positive_text)


def run(ctx: RunContext) -> dict:

    ctx.open_encoder()
    pairs = _generate(ctx)
    kept, drops = gen_filters.filter_negatives(
        ctx.synthetic_negatives, ctx.recipe.synthetic_negatives, ctx.embed_passages, {p[2]: p[3] for p in pairs}
    )
    ctx.synthetic_negatives = kept
    ctx.report["synthetic_negatives"].update(kept=len(kept), dropped=drops)
    return {"rows": len(kept)}


def generate_only(ctx: RunContext) -> dict:
    """The dry run's ``synthetic_negatives``: the LLM requests only (their filters need the embedder)."""
    _generate(ctx)
    return {"rows": len(ctx.synthetic_negatives)}


def _generate(ctx: RunContext) -> list[Pair]:
    """Every generated negative, unfiltered, in ``ctx.synthetic_negatives``; returns the pairs they were written
    for."""

    recipe = ctx.recipe
    pairs = negative_pairs(recipe, ctx.data, ctx.synthetic_queries)
    ctx.synthetic_negatives, stats = generate_negatives(
        recipe.synthetic_negatives, pairs, ctx.client, ctx.prompts, recipe.seed, client_defaults(recipe)
    )
    ctx.report["synthetic_negatives"] = {
        "pairs": len(pairs),
        "generation": stats,
        "generated": len(ctx.synthetic_negatives),
    }
    return pairs


def negative_pairs(recipe, data: SourceData, kept: list[SyntheticQuery]) -> list[Pair]:
    """The (query, positive) pairs that get LLM-written negatives; a seeded sample when ``max_pairs`` caps them."""
    cfg = recipe.synthetic_negatives
    synthetic_ids = {q.id for q in kept}
    rows = []
    for qid, positives in data.qrels.items():
        is_synth = qid in synthetic_ids
        if (cfg.pairs == "synthetic" and not is_synth) or (cfg.pairs == "real" and is_synth):
            continue
        if qid not in data.queries.row_of:
            continue
        query_text = data.queries.texts[data.queries.row_of[qid]]
        for doc_id, grade in sorted(positives.items()):
            if grade > 0 and doc_id in data.corpus.row_of:
                rows.append((qid, query_text, doc_id, data.corpus.texts[data.corpus.row_of[doc_id]]))
    return cap_pairs(rows, cfg.max_pairs, recipe.seed)


def cap_pairs(rows: list[Pair], max_pairs: int | None, seed: int) -> list[Pair]:
    """A seeded sample of ``max_pairs`` rows that depends only on (seed, query id, positive id)."""
    if max_pairs is None or len(rows) <= max_pairs:
        return rows
    keys = np.array([stable_key(r[0], r[2]) for r in rows], dtype=np.uint64)
    order = np.argsort(uniforms(seed, keys, salt="synthetic_negatives.pairs", k=1)[:, 0], kind="stable")
    return [rows[i] for i in sorted(order[:max_pairs].tolist())]


STAGE = Stage(
    "synthetic_negatives",
    run,
    lambda recipe: recipe.synthetic_negatives is not None,
    reads=("data", "synthetic_queries"),
    writes=("synthetic_negatives",),
    sections=("synthetic_negatives",),
    dry=generate_only,
)
