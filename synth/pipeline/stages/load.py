"""``load``: the recipe's source, checked; the limits the corpus cannot meet fail here, not after hours of
embedding."""

from __future__ import annotations

import hashlib
import json

from synth.core.records import SourceData
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, always, mines, needs_index
from synth.sources import load_source


def run(ctx: RunContext) -> dict:

    data = load_source(ctx.recipe.source)
    ctx.report["input_findings"] = data.findings.as_dict()
    adopt_source(ctx, data)
    if needs_index(ctx.recipe):
        from synth.index_factory import check_factory

        check_factory(ctx.recipe.index.factory, len(data.corpus), ctx.recipe.index.train_size)
    if mines(ctx.recipe):
        from synth.mine import corpus_limits

        clamps = corpus_limits(ctx.recipe.mine, len(data.corpus))
        if clamps:
            ctx.report["clamps"] = clamps
    if not data.queries.ids:  # zero-label: say what the judges can and cannot learn without a labelled query
        ctx.notices.append(zero_label_notice(ctx.recipe))
    return {
        "rows": sum(1 for pos in data.qrels.values() for g in pos.values() if g > 0),
        "corpus": len(data.corpus),
        "queries": len(data.queries),
    }


def adopt_source(ctx: RunContext, data: SourceData) -> None:
    """Make ``data`` the run's source (the probe calls this with its view of the source, hidden positives out):
    the labelled positives as loaded, and the fingerprint the judge caches are keyed by."""
    ctx.data = data
    ctx.source_qrels = {q: dict(d) for q, d in data.qrels.items()}  # before synthetic pairs join
    if ctx.recipe.judge is not None:
        ctx.source_fp = source_fingerprint(data)


def source_fingerprint(data: SourceData) -> str:
    """Content of the source as loaded (corpus, queries, qrels): keys the CE cache and the verdict store."""
    h = hashlib.sha256()
    for part in (data.corpus.ids, data.corpus.texts, data.queries.ids, data.queries.texts):
        for x in part:
            h.update(x.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    h.update(json.dumps(data.qrels, sort_keys=True).encode())
    return h.hexdigest()[:24]


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


STAGE = Stage(
    "load",
    run,
    always,
    writes=("data", "source_qrels", "source_fp"),
    sections=("input_findings", "clamps"),
    dry=run,
)
