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
from synth.sources import load_source

RESULT = "fn_probe.json"


def n_hidden(m: int, fraction: float) -> int:
    """How many of ``m`` positives to hide: ``floor(fraction * m)`` clamped to [1, m - 1] (a half of 3
    hides 1; this reproduces MEASURING.md's anchor figures)."""
    return min(m - 1, max(1, int(math.floor(fraction * m))))


def positive_ids(data: SourceData, qid: str) -> list[str]:
    """A query's labelled positives that are in the corpus, in qrels order."""
    rows = data.corpus.row_of
    return [d for d, g in data.qrels.get(qid, {}).items() if g > 0 and d in rows]


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


def full_ranks(
    query_emb: np.ndarray,
    corpus_emb: np.ndarray,
    query_rows: np.ndarray,
    doc_rows: np.ndarray,
    block: int | None = None,
) -> np.ndarray:
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


def probe_metrics(
    data: SourceData,
    query_ids: list[str],
    neg_rows: np.ndarray,
    hidden: dict[str, list[str]],
    ranks: np.ndarray,
    n: int,
    labelled: Qrels | None = None,
) -> dict:
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


def reference_rows(
    query_emb: np.ndarray, corpus_emb: np.ndarray, query_rows: np.ndarray, banned: list[set[int]], n: int
) -> np.ndarray:
    """[Q, n] the first n corpus rows of each query's exact dense ranking (score descending, row ascending
    on ties) that are not in its ``banned`` set; -1 where the corpus runs out."""
    out = np.full((len(query_rows), n), -1, np.int64)
    block = max(1, min(256, (1 << 25) // max(1, corpus_emb.shape[0])))
    corpus = np.asarray(corpus_emb, np.float32)
    for start in range(0, len(query_rows), block):
        scores = np.asarray(query_emb[query_rows[start : start + block]], np.float32) @ corpus.T
        for j, line in enumerate(scores):
            i = start + j
            k = min(len(line), n + len(banned[i]))
            top = np.argpartition(-line, k - 1)[:k] if k < len(line) else np.arange(len(line))
            order = top[np.lexsort((top, -line[top]))]
            picked = [r for r in order.tolist() if r not in banned[i]][:n]
            out[i, : len(picked)] = picked
    return out


def hardness_limit(
    data: SourceData, view: SourceData, hidden: dict[str, list[str]], query_emb, corpus_emb, n: int, exclude_text: bool
) -> dict:
    """The probe's two references, on the probed queries and their exact dense rankings:
    - the hardness limit (``oracle_mean_rank``): the mean rank of the first n candidates that are not
      labelled positives (visible or hidden), i.e. the hardest clean negatives an oracle could pick;
    - plain top-n (``topk_fn_rate``): the first n candidates that are not visible positives, as mined
      with no sampler, filter or judge, and the share of them that are hidden positives.
    Both skip what the miner never returns (passages equal to the query's text, positives of a query
    with the same text) and are counted like ``probe_metrics`` (each query's distinct negatives)."""
    from synth.mine import excluded_rows_per_query

    q_row, d_row = view.queries.row_of, view.corpus.row_of
    qids = [q for q in view.queries.ids if q in hidden]
    rows = np.asarray([q_row[q] for q in qids], np.int64)
    excluded = excluded_rows_per_query(view, exclude_text)
    shown = [set(excluded[r].tolist()) for r in rows.tolist()]
    everything = [s | {d_row[d] for d in positive_ids(data, q)} for s, q in zip(shown, qids)]
    out = {}
    for name, banned in (("oracle", everything), ("topk", shown)):
        picks = reference_rows(query_emb, corpus_emb, rows, banned, n)
        m = probe_metrics(view, qids, picks, hidden, full_ranks(query_emb, corpus_emb, rows, picks), n)
        out[name] = m
    return {
        "oracle_mean_rank": out["oracle"]["mean_rank"],
        "oracle_fn_rate": out["oracle"]["fn_rate"],
        "topk_fn_rate": out["topk"]["fn_rate"],
        "topk_mean_rank": out["topk"]["mean_rank"],
    }


def relative(result: dict, limit: dict) -> dict:
    """The probe's figures against its references: FN as a share of plain top-n's, rank as a multiple of
    the hardness limit."""
    fn, top = result.get("fn_rate"), limit.get("topk_fn_rate")
    rank, oracle = result.get("mean_rank"), limit.get("oracle_mean_rank")
    return {
        **limit,
        "fn_vs_topk": fn / top if fn is not None and top else None,
        "rank_vs_oracle": rank / oracle if rank is not None and oracle else None,
    }


def _ratio(a, b) -> float | None:
    return float(a) / float(b) if b else None


def _stat(fn, x: np.ndarray) -> float | None:
    return float(fn(x)) if len(x) else None


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
    from synth.pipeline.stages import PROBE_STAGES, run_stages

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
    ctx = _probe_context(recipe, view)
    names = PROBE_STAGES
    if loaded is not None:  # the embeddings it brings (PROBE_MAY_BRING): the embed stage has nothing to do
        ctx.corpus_emb, ctx.query_emb = loaded[1], np.asarray(loaded[2], np.float32)
        names = tuple(n for n in PROBE_STAGES if n != "embed")
    try:
        run_stages(ctx, names)
    finally:
        ctx.close()
    pairs, corpus_emb = ctx.pairs, ctx.corpus_emb
    probed = np.asarray([i for i, q in enumerate(pairs.query_ids) if q in hidden], np.int64)
    qids = [pairs.query_ids[i] for i in probed.tolist()]
    qrows = pairs.query_rows[probed]
    row_of = view.corpus.row_of
    neg_rows = np.full((len(probed), ctx.n), -1, np.int64)
    for k, i in enumerate(probed.tolist()):
        for j, x in enumerate((ctx.negatives[i] or [])[: ctx.n]):
            neg_rows[k, j] = row_of.get(x.id, -1)
    ranks = full_ranks(ctx.query_emb, corpus_emb, qrows, neg_rows)
    result = probe_metrics(view, qids, neg_rows, hidden, ranks, ctx.n)
    limit = hardness_limit(data, view, hidden, ctx.query_emb, corpus_emb, ctx.n, recipe.mine.exclude_query_text)
    result.update(relative(result, limit))
    if recipe.judge is not None or recipe.mix is not None:
        pool_rows = ctx.mined.negative_rows[probed]
        pool = probe_metrics(
            view,
            qids,
            pool_rows,
            hidden,
            full_ranks(ctx.query_emb, corpus_emb, qrows, pool_rows),
            recipe.mine.n_negatives,
        )
        result["judged"] = {"pool": pool, "selection": ctx.report.get("selection"), "mix": ctx.report.get("mix")}
        if recipe.judge is not None:
            judging = ctx.report.get("judging") or {}
            result["judged"]["judging"] = {"final": judging.get("final"), "policy": judging.get("policy")}
            result["judges"] = judge_quality(ctx.verdict_rows, hidden, judging.get("stages") or [])
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


def judge_quality(verdict_rows: list[dict], hidden: dict[str, list[str]], stage_reports: list[dict]) -> dict:
    """Per judge stage, over the probed candidates it saw (MEASURING.md, "Judge quality"): the ROC AUC of
    its score (higher = more likely relevant) with hidden positives as the positive class, and the
    precision and recall of its ``false_negative`` verdicts; the base rate is the pool's share of hidden
    positives. ``final`` does the same for the cascade's flags (``false_negative`` or ``uncertain``)."""
    from sklearn.metrics import roc_auc_score

    hidden_keys = {(q, d) for q, ds in hidden.items() for d in ds}
    rows = [r for r in verdict_rows if r["query_id"] in hidden]

    def figures(labels: list[bool], scores: list[float] | None, flagged: list[bool]) -> dict:
        y = np.asarray(labels, bool)
        f = np.asarray(flagged, bool)
        out = {
            "candidates": int(len(y)),
            "hidden_positives": int(y.sum()),
            "base_rate": float(y.mean()) if len(y) else None,
            "flagged": int(f.sum()),
            "flagged_hidden": int((f & y).sum()),
            "precision": float((f & y).sum() / f.sum()) if f.sum() else None,
            "recall": float((f & y).sum() / y.sum()) if y.sum() else None,
            "auc": None,
        }
        if scores is not None and 0 < y.sum() < len(y):
            sc = np.asarray(scores, np.float64)
            ok = np.isfinite(sc)
            if 0 < y[ok].sum() < ok.sum():
                out["auc"] = float(roc_auc_score(y[ok], sc[ok]))
                out["auc_candidates"] = int(ok.sum())
        return out

    result: dict = {"stages": []}
    reports = {s.get("stage"): s for s in stage_reports}
    names = list(dict.fromkeys(n for r in rows for n in r["stage_names"]))
    for name in names:
        seen = [(r, r["stage_names"].index(name)) for r in rows if name in r["stage_names"]]
        entry = {
            "stage": name,
            "kind": (reports.get(name) or {}).get("kind"),
            **figures(
                [(r["query_id"], r["doc_id"]) in hidden_keys for r, _ in seen],
                [r["stage_scores"][k] for r, k in seen],
                [r["stage_verdicts"][k] == "false_negative" for r, k in seen],
            ),
        }
        model_report = (reports.get(name) or {}).get("model_report")
        if model_report:
            entry["model_estimate"] = {
                k: model_report.get(k) for k in ("mode", "summary", "heldout", "threshold", "estimate")
            }
        result["stages"].append(entry)
    result["final"] = figures(
        [(r["query_id"], r["doc_id"]) in hidden_keys for r in rows], None, [r["verdict"] != "negative" for r in rows]
    )
    return result
