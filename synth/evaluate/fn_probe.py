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

A recipe with ``judge:`` or ``mix:`` is probed on what it would publish: the mined pool goes through
the recipe's cascade and policy (a ``model: trained`` cross-encoder is trained on the *visible*
positives only: one that had seen the hidden ones would find them trivially), then mix keeps the
first ``mix.mined + mix.synthetic`` cleared mined negatives per pair (the probe has no LLM-written
negatives: they are not corpus documents, so they cannot be hidden positives, and in a run their
empty slots are refilled by mined ones just the same).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from synth.embed import EmbedStats
from synth.errors import UserError
from synth.index import Searcher
from synth.jsonio import write_json_atomic
from synth.mine import build_pairs, mine
from synth.records import Qrels, Queries, SourceData
from synth.samplers.base import stable_key, uniforms
from synth.sources import load_source

RESULT = "fn_probe.json"


def positive_ids(data: SourceData, qid: str) -> list[str]:
    """A query's labelled positives that are in the corpus, in qrels order."""
    rows = data.corpus.row_of
    return [d for d, g in data.qrels.get(qid, {}).items() if g > 0 and d in rows]


def n_hidden(m: int, hide_fraction: float) -> int:
    """How many of ``m >= 2`` positives to hide: ``floor(hide_fraction * m)``, clamped to [1, m-1]
    (a half of 3 positives hides 1). This reproduces MEASURING.md's anchor figures."""
    return min(m - 1, max(1, int(math.floor(hide_fraction * m))))


def hide_positives(data: SourceData, hide_fraction: float = 0.5, probe_seed: int = 0) -> tuple[Qrels, dict[str, list[str]]]:
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
        u = uniforms(probe_seed, np.asarray([stable_key(qid)], np.uint64), "fn-probe-hide", len(pos))[0]
        order = np.argsort(u, kind="stable")
        hide = {pos[j] for j in order[: n_hidden(len(pos), hide_fraction)].tolist()}
        hidden[qid] = [d for d in pos if d in hide]
        visible[qid] = {d: g for d, g in data.qrels[qid].items() if d not in hide}
    return visible, hidden


def probe_data(data: SourceData, visible: Qrels) -> tuple[SourceData, np.ndarray]:
    """A ``SourceData`` with only the probed queries and their visible positives, and the rows of
    those queries in ``data.queries`` (to slice the query embeddings)."""
    keep = [r for r, qid in enumerate(data.queries.ids) if qid in visible]
    queries = Queries([data.queries.ids[r] for r in keep], [data.queries.texts[r] for r in keep])
    return SourceData(data.corpus, queries, visible, data.findings), np.asarray(keep, np.int64)


def full_ranks(query_emb: np.ndarray, corpus_emb: np.ndarray, query_rows: np.ndarray, doc_rows: np.ndarray,
               block: int | None = None) -> np.ndarray:
    """1-based rank [P, n] of ``doc_rows[i, j]`` in query ``query_rows[i]``'s ranking of the whole
    corpus by inner product (1 + the number of documents scoring strictly higher); 0 where the row is -1."""
    ranks = np.zeros(doc_rows.shape, np.int64)
    block = block or max(1, min(256, (1 << 25) // max(1, corpus_emb.shape[0])))  # ~128 MiB of scores
    uq, inv = np.unique(query_rows, return_inverse=True)
    for start in range(0, len(uq), block):
        sel = np.flatnonzero((inv >= start) & (inv < start + block))
        if not len(sel):
            continue
        scores = np.asarray(query_emb[uq[start : start + block]], np.float32) @ np.asarray(corpus_emb, np.float32).T
        ordered = np.sort(scores, axis=1)
        for i in sel.tolist():
            line = inv[i] - start
            rows = doc_rows[i]
            ok = rows >= 0
            s = scores[line, rows[ok]]
            ranks[i, ok] = scores.shape[1] - np.searchsorted(ordered[line], s, side="right") + 1
    return ranks


def probe_metrics(data: SourceData, query_ids: list[str], neg_rows: np.ndarray, hidden: dict[str, list[str]],
                  ranks: np.ndarray, n: int, labelled: Qrels | None = None) -> dict:
    """FN rate, hardness and shortfall from mined rows [P, n] (-1 = empty slot) of pairs of ``query_ids``.
    Shared by synth's probe and the sentence-transformers anchor so that both are counted the same way.
    ``labelled`` (default ``data.qrels``): the visible positives; any of them mined as a negative is
    counted apart (``labelled_as_negative``; never a false negative of the probe, and 0 for synth)."""
    d_row = data.corpus.row_of
    hidden_rows = {q: {d_row[d] for d in ds} for q, ds in hidden.items()}
    labelled = data.qrels if labelled is None else labelled
    shown = {q: {d_row[d] for d, g in labelled.get(q, {}).items() if g > 0 and d in d_row} for q in hidden}
    fn = np.asarray([[r in hidden_rows[q] for r in line] for q, line in zip(query_ids, neg_rows.tolist())], bool)
    fn = fn.reshape(neg_rows.shape)
    filled = neg_rows >= 0
    per_q: dict[str, dict[int, int]] = {}
    short: set[str] = set()
    for i, q in enumerate(query_ids):
        seen = per_q.setdefault(q, {})
        for r, k in zip(neg_rows[i].tolist(), ranks[i].tolist()):
            if r >= 0:
                seen[r] = k
        if filled[i].sum() < n:
            short.add(q)
    uniq_fn = np.asarray([r in hidden_rows[q] for q, seen in per_q.items() for r in seen], bool)
    uniq_rank = np.asarray([k for seen in per_q.values() for k in seen.values()], np.int64)
    return {
        "n": n,
        "probed_queries": len(hidden),
        "pairs": len(query_ids),
        "negatives": len(uniq_rank),
        "false_negatives": int(uniq_fn.sum()),
        "fn_rate": _ratio(uniq_fn.sum(), len(uniq_fn)),
        "mean_rank": _stat(np.mean, uniq_rank),
        "median_rank": _stat(np.median, uniq_rank),
        "queries_short": len(short),
        "queries_with_fn": len({q for i, q in enumerate(query_ids) if fn[i].any()}),
        "labelled_as_negative": sum(r in shown[q] for q, seen in per_q.items() for r in seen),
        "per_pair": {
            "negatives": int(filled.sum()),
            "false_negatives": int(fn[filled].sum()),
            "fn_rate": _ratio(fn[filled].sum(), filled.sum()),
            "mean_rank": _stat(np.mean, ranks[filled]),
            "median_rank": _stat(np.median, ranks[filled]),
            "pairs_short": int((filled.sum(axis=1) < n).sum()),
        },
    }


def _ratio(a, b) -> float | None:
    return float(a) / float(b) if b else None


def _stat(fn, x: np.ndarray) -> float | None:
    return float(fn(x)) if len(x) else None


def load_and_embed(recipe):
    """Load the recipe's source and embed it through synth's cache (``run.embed_stage``)."""
    from synth.run import embed_stage

    data = load_source(recipe.source)
    corpus_emb, query_emb = embed_stage(recipe, data, EmbedStats())
    return data, corpus_emb, query_emb


def run_fn_probe(recipe, out_dir: str | Path | None, hide_fraction: float = 0.5, probe_seed: int = 0,
                 loaded: tuple | None = None) -> dict:
    """Run the probe for ``recipe`` and write ``out_dir/fn_probe.json`` (atomically) unless
    ``out_dir`` is None. ``loaded`` = (data, corpus_emb, query_emb) skips loading and embedding."""
    if recipe.mine is None:
        raise ValueError("the false-negative probe needs a recipe with a mine: section")
    data, corpus_emb, query_emb = loaded if loaded is not None else load_and_embed(recipe)
    visible, hidden = hide_positives(data, hide_fraction, probe_seed)
    if not hidden:
        raise UserError(f"{getattr(recipe.source, 'path', recipe.source.kind)}: no query has two or more positives in the corpus: nothing to probe")
    pdata, qrows = probe_data(data, visible)
    p_query_emb = np.asarray(query_emb[qrows], np.float32)
    pairs = build_pairs(pdata)
    idx = recipe.index
    searcher = Searcher.from_config(idx, corpus_emb, recipe.seed)
    mined, stats = mine(pdata, pairs, corpus_emb, p_query_emb, searcher, recipe.mine, idx.query_block, recipe.seed)
    neg_rows, n, after = mined.negative_rows, recipe.mine.n_negatives, None
    if recipe.judge is not None or recipe.mix is not None:
        neg_rows, n, after = published_rows(recipe, data, pdata, pairs, mined, hidden)
    ranks = full_ranks(p_query_emb, corpus_emb, pairs.query_rows, neg_rows)
    result = probe_metrics(pdata, pairs.query_ids, neg_rows, hidden, ranks, n)
    if after is not None:
        pool_ranks = full_ranks(p_query_emb, corpus_emb, pairs.query_rows, mined.negative_rows)
        after["pool"] = probe_metrics(pdata, pairs.query_ids, mined.negative_rows, hidden, pool_ranks,
                                      recipe.mine.n_negatives)
        result["judged"] = after
    result.update(
        method=recipe.mine.sampler.kind,
        sampler=recipe.mine.sampler.model_dump(mode="json"),
        filters=[f.model_dump(mode="json") for f in recipe.mine.filters],
        positive_anchor=recipe.mine.positive_anchor,
        hide_fraction=hide_fraction,
        probe_seed=probe_seed,
        seed=recipe.seed,
        hidden_positives=sum(len(v) for v in hidden.values()),
        visible_positives=len(pairs),
        corpus=len(data.corpus),
        score_space=idx.metric,
        index=searcher.info.as_dict(),
        mining=stats.as_dict(),
        recipe=recipe.name,
    )
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / RESULT, result)
    return result


def published_rows(recipe, data: SourceData, pdata: SourceData, pairs, mined, hidden: dict[str, list[str]]):
    """(corpus rows [P, n] of the negatives the recipe would publish per probe pair, n, a report):
    the mined pool -> the recipe's judge cascade and policy -> mix's mined slots."""
    from synth import judging
    from synth import synthetic as syn_stages
    from synth.mix import mix
    from synth.publish.formats import negatives_from_mined

    pool = negatives_from_mined(mined, pdata.corpus)
    no_synthetic: list[list] = [[] for _ in pool]
    kept: list[set[str] | None] = [{x.id for x in negs} for negs in pool]
    report: dict = {}
    if recipe.judge is not None:
        cascade = judging.load_run_cascade(recipe)
        hidden_of = {q: set(ds) for q, ds in hidden.items()}
        visible_qrels = {q: {d: g for d, g in docs.items() if d not in hidden_of.get(q, ())}
                         for q, docs in data.qrels.items()}
        visible = SourceData(data.corpus, data.queries, visible_qrels, data.findings)
        fingerprint = judging.source_fingerprint(visible)
        cache = Path(recipe.embed.cache_dir)
        needs_llm = any(s.kind.startswith("llm_") and s.llm is None for s in cascade.stages)
        client = syn_stages.open_client(recipe) if needs_llm else None
        try:
            ce_info = None
            if judging.needs_training(cascade):
                ce_info = judging.trained_cross_encoder(recipe, visible, visible_qrels, fingerprint, cache)
                judging.resolve_trained_models(cascade, ce_info["path"])
            judged = judging.judge_pairs(recipe, cascade, pairs, pdata, mined.positive_scores.tolist(), pool,
                                         no_synthetic, judging.store_dir_for(cache, fingerprint, cascade), client,
                                         syn_stages.prompt_library(recipe), ce_info)
        finally:
            if client is not None:
                client.close()
        kept = judged.kept
        hidden_rows = {(q, d) for q, ds in hidden_of.items() for d in ds}
        flagged = [(q, d) for q, d, v in ((r["query_id"], r["doc_id"], r["verdict"]) for r in judged.verdict_rows)
                   if v != "negative"]
        report["judging"] = {"final": judged.report["final"], "policy": judged.report["policy"],
                             "hidden_positives_in_pool": sum((r["query_id"], r["doc_id"]) in hidden_rows
                                                             for r in judged.verdict_rows),
                             "hidden_positives_flagged": sum(k in hidden_rows for k in flagged)}
    n_mined = recipe.mix.mined if recipe.mix is not None else recipe.mine.n_negatives
    n_synthetic = recipe.mix.synthetic if recipe.mix is not None else 0
    negatives, stats = mix([pdata.corpus.texts[r] for r in pairs.positive_rows.tolist()], pool, no_synthetic, kept,
                           n_mined, n_synthetic)
    n = n_mined + n_synthetic
    rows = np.full((len(pairs), n), -1, np.int64)
    row_of = pdata.corpus.row_of
    for i, negs in enumerate(negatives):
        for j, x in enumerate(negs or []):
            rows[i, j] = row_of[x.id]
    report["mix"] = stats.as_dict()
    return rows, n, report
