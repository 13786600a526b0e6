"""``filter_queries``: the synthetic queries the filters keep (``synth.generate.filters``: length, near
duplicates, round trip, eval overlap; the quality judge's verdict first; then the type quotas again) join the
source as (query, the chunk it was written from) pairs."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

import numpy as np

from synth.core.records import Queries, SourceData
from synth.generate import filters as gen_filters
from synth.generate.quotas import hold_quotas
from synth.generate.records import SyntheticQuery
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage


def run(ctx: RunContext) -> dict:
    ctx.open_encoder()
    kept, ctx.dropped_by, figures = filter_candidates(
        ctx.recipe, ctx.data, ctx.query_candidates, ctx.embed_queries, ctx.corpus_emb, ctx.searcher
    )
    ctx.report["synthetic_queries"].update(figures)
    _join(ctx, kept)
    return {"rows": len(kept)}


def unfiltered(ctx: RunContext) -> dict:
    """The dry run's ``filter_queries`` (the filters need the embedder and the index): every candidate is kept,
    cut to the longest text the filters let through, so the stages after it are planned for the most pairs and
    the longest queries they can get."""
    max_chars = ctx.recipe.synthetic_queries.filters.max_chars
    kept = [q if len(q.text) <= max_chars else replace(q, text=q.text[:max_chars]) for q in ctx.query_candidates]
    _join(ctx, kept)
    return {"rows": len(kept)}


def _join(ctx: RunContext, kept: list[SyntheticQuery]) -> None:
    ctx.synthetic_queries = kept
    ctx.data = with_synthetic_pairs(ctx.data, kept)


def with_synthetic_pairs(data: SourceData, kept: list[SyntheticQuery]) -> SourceData:
    """The source plus one pair per kept synthetic query, whose one positive is the chunk it was written for.
    A new ``SourceData``: the source as loaded is left as it was."""
    queries = Queries(data.queries.ids + [q.id for q in kept], data.queries.texts + [q.text for q in kept])
    qrels = {**data.qrels, **{q.id: {q.doc_id: 1} for q in kept}}
    return SourceData(data.corpus, queries, qrels, data.findings)


def filter_candidates(
    recipe,
    data: SourceData,
    candidates: list[SyntheticQuery],
    embed_queries: Callable[[list[str]], np.ndarray],
    corpus_emb: np.ndarray,
    searcher,
) -> tuple[list[SyntheticQuery], dict[str, str], dict]:
    """(kept, candidate id -> the filter that dropped it, the report's figures)."""

    cfg = recipe.synthetic_queries
    eval_texts = list(data.queries.texts) + gen_filters.load_eval_texts(cfg.filters.eval_queries)

    def top_rows(query_emb: np.ndarray, k: int) -> np.ndarray:
        blocks = [rows for _, _, rows in searcher.search(query_emb, k, recipe.index.query_block)]
        return np.concatenate(blocks) if blocks else np.empty((0, k), np.int64)

    judged = cfg.quality_judge is not None  # it ran at generation (a dry run plans its requests); it drops first
    passed = [q for q in candidates if q.quality == "keep"] if judged else candidates
    kept, drops, dropped_by = gen_filters.filter_queries(
        passed, cfg.filters, embed_queries, data.corpus, eval_texts, top_rows
    )
    if judged:
        failed = [q for q in candidates if q.quality != "keep"]
        drops = {"quality_judge": len(failed), **drops}
        dropped_by.update({q.id: "quality_judge" for q in failed})
    if cfg.type_quotas is not None:  # the filters do not drop every type alike: hold the quotas again
        mask = hold_quotas([q.id for q in kept], [q.query_type for q in kept], cfg.type_quotas, recipe.seed)
        drops["quota"] = mask.count(False)
        dropped_by.update({q.id: "quota" for q, ok in zip(kept, mask) if not ok})
        kept = [q for q, ok in zip(kept, mask) if ok]
    figures: dict = {"candidates": len(candidates), "kept": len(kept), "dropped": drops}
    if cfg.type_quotas is not None or cfg.max_queries_per_doc is not None:
        documents = Counter(data.corpus.document_of(data.corpus.row_of[q.doc_id]) for q in kept)
        figures["kept_by_type"] = dict(sorted(Counter(q.query_type for q in kept).items()))
        figures["max_kept_per_document"] = max(documents.values(), default=0)
    return kept, dropped_by, figures


STAGE = Stage(
    "filter_queries",
    run,
    lambda recipe: recipe.synthetic_queries is not None,
    reads=("data", "query_candidates", "corpus_emb", "searcher"),
    writes=("synthetic_queries", "dropped_by", "data"),
    sections=("synthetic_queries",),
    dry=unfiltered,
)
