"""The false-negative probe (``/work/shared/design/MEASURING.md``).

For every query with at least 2 positives, a seeded random ``hide_fraction`` of its positives is
hidden (at least 1 hidden, at least 1 visible); queries with a single positive are left out. The
recipe's sampler mines with only the visible positives labelled, and we count how many mined
negatives are hidden positives (false negatives), beside a hardness figure: the 1-based rank of
every mined negative in the query's own dense ranking over the whole corpus (positives included).

Counting unit (as MEASURING.md's anchor figures): each probed query's *distinct* mined negatives,
the union over its pairs (a pair = a (query, visible positive)); with a sampler that mines per query
(top-k) that is n per query. ``per_pair`` repeats the figures over every mined (pair, negative)
slot, i.e. the rows a run would publish, which weighs queries by their number of visible positives.

The probe runs the recipe's own stages (``synth.pipeline.stages``: mining with backfill, the judge
cascade, the policy, mixing) on a view of the source whose qrels lack the hidden positives, so it
measures what ``synth run`` would publish; every judge learns from the visible positives only (a
``model: trained`` cross-encoder, an ``fn_risk`` model), never from the hidden ones. The LLM
generation stages do not run: LLM-written negatives are not corpus documents, so they cannot be
hidden positives, and in a run their empty slots are refilled by mined ones just the same. Every
judge stage is scored on the probed candidates it saw (``judges``: ROC AUC, precision and recall of
its false-negative verdicts).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synth.report.files import FnProbeResult
from synth.core import outdir
from synth.core.errors import UserError
from synth.core.files import atomic_write_json
from synth.core.records import Qrels, Queries, SourceData
from synth.core.seeding import seeded_subset
from synth.evaluate.probe_metrics import (
    full_ranks,
    positive_ids,
    hardness_limit,
    judge_quality,
    probe_metrics,
    relative,
)
from synth.sources import load_source

RESULT = "fn_probe.json"


def n_hidden(m: int, fraction: float) -> int:
    """How many of ``m`` positives to hide: ``floor(fraction * m)`` clamped to [1, m - 1] (a half of 3
    hides 1; this reproduces MEASURING.md's anchor figures)."""
    return min(m - 1, max(1, int(math.floor(fraction * m))))


def hide_positives(
    data: SourceData, hide_fraction: float = 0.5, probe_seed: int = 0
) -> tuple[Qrels, dict[str, list[str]]]:
    """(visible qrels of the probed queries, hidden positive ids per probed query).

    The choice per query is a pure function of (probe_seed, query id, its positives): it does not
    depend on which other queries exist or on their order."""
    if not 0.0 < hide_fraction < 1.0:
        raise ValueError(f"hide_fraction must be in (0, 1), got {hide_fraction}")
    visible: Qrels = {}
    hidden: dict[str, list[str]] = {}
    for qid in data.queries.ids:
        pos = positive_ids(data, qid)
        if len(pos) < 2:
            continue
        hidden[qid] = seeded_subset(probe_seed, qid, pos, n_hidden(len(pos), hide_fraction), "fn-probe-hide")
        hide = set(hidden[qid])
        visible[qid] = {d: g for d, g in data.qrels[qid].items() if d not in hide}
    return visible, hidden


def probe_data(data: SourceData, visible: Qrels) -> tuple[SourceData, np.ndarray]:
    """A ``SourceData`` with only the probed queries and their visible positives, and the rows of
    those queries in ``data.queries`` (to slice the query embeddings)."""
    keep = [r for r, qid in enumerate(data.queries.ids) if qid in visible]
    queries = Queries([data.queries.ids[r] for r in keep], [data.queries.texts[r] for r in keep])
    return SourceData(data.corpus, queries, visible, data.findings), np.asarray(keep, np.int64)


def probe_view(data: SourceData, hidden: dict[str, list[str]]) -> SourceData:
    """The source as a probed run sees it: every query, with the hidden positives taken out of the qrels."""
    hidden_of = {q: set(ds) for q, ds in hidden.items()}
    qrels = {q: {d: g for d, g in docs.items() if d not in hidden_of.get(q, ())} for q, docs in data.qrels.items()}
    return SourceData(data.corpus, data.queries, qrels, data.findings)


def _probe_context(recipe, data: SourceData):
    """The run's own context (``synth.pipeline.context.open_context``) over ``data``. Its LLM pool opens
    a client only if an LLM judge asks for one (the probe runs no generation stage)."""
    from synth.pipeline.context import open_context
    from synth.pipeline.stages.load import adopt_source

    ctx = open_context(recipe)
    adopt_source(ctx, data)  # what the load stage does with the source it loads
    return ctx


def load_and_embed(recipe):
    """Load the recipe's source and embed its corpus and queries through synth's cache."""
    from synth.pipeline.stages import run_stages

    ctx = _probe_context(recipe, load_source(recipe.source))
    try:
        run_stages(ctx, ("embed",))
        return ctx.data, ctx.corpus_emb, ctx.embed_queries(ctx.data.queries.texts)
    finally:
        ctx.close()


def run_fn_probe(
    recipe, out_dir: str | Path | None, hide_fraction: float = 0.5, probe_seed: int = 0, loaded: tuple | None = None
) -> dict:
    """Run the probe for ``recipe`` and write ``out_dir/fn_probe.json`` (atomically) unless
    ``out_dir`` is None. ``loaded`` = (data, corpus_emb, query_emb) skips loading and embedding.

    The recipe's own data path (``synth.pipeline.stages``: embed -> index -> pairs -> mine -> select,
    i.e. mining, backfill, the judge cascade, the policy and mixing) runs on the source with the
    hidden positives taken out of the qrels; the figures count what it publishes for the probed queries."""
    if recipe.mine is None:
        raise ValueError("the false-negative probe needs a recipe with a mine: section")
    if out_dir is not None:  # a foreign --out fails before any work (synth.core.outdir)
        outdir.check_replaceable(Path(out_dir))
    data = loaded[0] if loaded is not None else load_source(recipe.source)
    visible, hidden = hide_positives(data, hide_fraction, probe_seed)
    if not hidden:
        raise UserError(
            f"{getattr(recipe.source, 'path', recipe.source.kind)}: no query has two or more positives "
            "in the corpus: nothing to probe"
        )
    view = probe_view(data, hidden)
    ctx = _run_probe_stages(recipe, view, loaded)
    probed = np.asarray([i for i, q in enumerate(ctx.pairs.query_ids) if q in hidden], np.int64)
    qids = [ctx.pairs.query_ids[i] for i in probed.tolist()]
    qrows = ctx.pairs.query_rows[probed]
    neg_rows = _published_rows(ctx, view, probed)
    ranks = full_ranks(ctx.query_emb, ctx.corpus_emb, qrows, neg_rows)
    result = probe_metrics(view, qids, neg_rows, hidden, ranks, ctx.n)
    limit = hardness_limit(data, view, hidden, ctx.query_emb, ctx.corpus_emb, ctx.n, recipe.mine.exclude_query_text)
    result.update(relative(result, limit))
    if recipe.judge is not None or recipe.mix is not None:
        result.update(_judged_figures(ctx, view, hidden, probed, qids, qrows))
    result.update(
        method=recipe.mine.sampler.kind,
        sampler=recipe.mine.sampler.model_dump(mode="json"),
        filters=[f.model_dump(mode="json") for f in recipe.mine.filters],
        positive_anchor=recipe.mine.positive_anchor,
        hide_fraction=hide_fraction,
        probe_seed=probe_seed,
        seed=recipe.seed,
        hidden_positives=sum(len(v) for v in hidden.values()),
        visible_positives=sum(1 for q in hidden for g in view.qrels.get(q, {}).values() if g > 0),
        corpus=len(data.corpus),
        score_space=recipe.index.metric,
        index=ctx.searcher.info.as_dict(),
        mining=ctx.report.get("mining"),
        stages=ctx.timings,
        notices=ctx.notices,
        recipe=recipe.name,
    )
    FnProbeResult.model_validate(result)  # the file's model (synth.report.files): a missing key is a bug
    if out_dir is not None:  # written in place: the folder may be a run folder the probe annotates
        outdir.claim_in_place(Path(out_dir), "fn-probe")
        atomic_write_json(Path(out_dir) / RESULT, result)
    return result


def _run_probe_stages(recipe, view: SourceData, loaded: tuple | None):
    """The recipe's own data path over the probe's view (``PROBE_STAGES``); with ``loaded`` embeddings it brings
    (``PROBE_MAY_BRING``), the embed stage has nothing to do. Returns the closed context."""
    from synth.pipeline.stages import PROBE_STAGES, run_stages

    ctx = _probe_context(recipe, view)
    names = PROBE_STAGES
    if loaded is not None:
        ctx.corpus_emb, ctx.query_emb = loaded[1], np.asarray(loaded[2], np.float32)
        names = tuple(n for n in PROBE_STAGES if n != "embed")
    try:
        run_stages(ctx, names)
    finally:
        ctx.close()
    return ctx


def _published_rows(ctx, view: SourceData, probed: np.ndarray) -> np.ndarray:
    """The corpus rows of the negatives the recipe publishes for the probed pairs (-1 where a pair has fewer)."""
    row_of = view.corpus.row_of
    neg_rows = np.full((len(probed), ctx.n), -1, np.int64)
    for k, i in enumerate(probed.tolist()):
        for j, x in enumerate((ctx.negatives[i] or [])[: ctx.n]):
            neg_rows[k, j] = row_of.get(x.id, -1)
    return neg_rows


def _judged_figures(ctx, view: SourceData, hidden, probed: np.ndarray, qids: list[str], qrows) -> dict:
    """The mined pool's figures before judging and mixing, what selection did, and each judge's quality."""
    recipe = ctx.recipe
    pool_rows = ctx.mined.negative_rows[probed]
    pool_ranks = full_ranks(ctx.query_emb, ctx.corpus_emb, qrows, pool_rows)
    pool = probe_metrics(view, qids, pool_rows, hidden, pool_ranks, recipe.mine.n_negatives)
    out: dict = {"judged": {"pool": pool, "selection": ctx.report.get("selection"), "mix": ctx.report.get("mix")}}
    if recipe.judge is not None:
        judging = ctx.report.get("judging") or {}
        out["judged"]["judging"] = {"final": judging.get("final"), "policy": judging.get("policy")}
        out["judges"] = judge_quality(ctx.verdict_rows, hidden, judging.get("stages") or [])
    return out
