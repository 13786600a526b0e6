"""The false-negative probe's figures (``synth.evaluate.fn_probe`` runs the probe): each published negative's
rank in its query's own dense ranking, the FN rate and hardness of what a recipe publishes, the hardness limit
an oracle that knows every labelled positive would reach, and each judge's quality on the hidden positives."""

from __future__ import annotations


import numpy as np

from synth.core.records import Qrels, SourceData


def positive_ids(data: SourceData, qid: str) -> list[str]:
    """A query's labelled positives that are in the corpus, in qrels order."""
    rows = data.corpus.row_of
    return [d for d, g in data.qrels.get(qid, {}).items() if g > 0 and d in rows]


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
