"""Mined pairs -> a ``datasets.Dataset`` in a sentence-transformers layout, with provenance.

Text columns come first, in the order the sentence-transformers losses read them; provenance
columns follow. sentence-transformers tokenises *every* non-label column, so train on
``trainable(dataset)`` (the text columns only); the provenance stays in the saved dataset.
"""

from __future__ import annotations

import numpy as np

from synth.records import Corpus, Mined, Pairs, Queries

PROVENANCE_COLUMNS = ["query_id", "positive_id", "negative_ids", "negative_scores", "positive_score", "sampler", "seed",
                      "query_origin", "query_model", "query_prompt_sha256", "persona_id", "query_type"]
# Where a row's query came from: "real" (the source) or "synthetic" (an LLM, with model and prompt hash).
QUERY_PROVENANCE = ["query_origin", "query_model", "query_prompt_sha256", "persona_id", "query_type"]
_REAL_QUERY = {"query_origin": "real", "query_model": "", "query_prompt_sha256": "", "persona_id": "", "query_type": ""}


def text_columns(fmt: str, n: int) -> list[str]:
    return {
        "n-tuple": ["anchor", "positive", *[f"negative_{i + 1}" for i in range(n)]],
        "triplet": ["anchor", "positive", "negative"],
        "labeled-pair": ["sentence1", "sentence2", "label"],
        "pairs": ["anchor", "positive"],
    }[fmt]


def trainable(dataset):
    """The dataset as ``SentenceTransformerTrainer`` takes it: text (and label) columns only."""
    return dataset.remove_columns([c for c in PROVENANCE_COLUMNS if c in dataset.column_names])


def build_rows(fmt: str, n: int, pairs: Pairs, mined: Mined | None, corpus: Corpus, queries: Queries,
               query_provenance: dict[str, dict] | None = None) -> tuple[dict, dict]:
    """Column dict for ``Dataset.from_dict`` and counts for the report (rows, dropped short pairs).
    ``query_provenance`` maps synthetic query ids to their ``QUERY_PROVENANCE`` values."""
    query_provenance = query_provenance or {}
    qtext = [queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [corpus.texts[r] for r in pairs.positive_rows.tolist()]
    cols: dict[str, list] = {c: [] for c in text_columns(fmt, n) + PROVENANCE_COLUMNS}
    counts = {"pairs": len(pairs), "short_pairs_dropped": 0, "negatives": 0}

    def prov(i: int, neg_rows: list[int], neg_scores: list[float], pos_score: float, sampler: str, seed) -> None:
        cols["query_id"].append(pairs.query_ids[i])
        cols["positive_id"].append(pairs.positive_ids[i])
        cols["negative_ids"].append([corpus.ids[r] for r in neg_rows])
        cols["negative_scores"].append(neg_scores)
        cols["positive_score"].append(pos_score)
        cols["sampler"].append(sampler)
        cols["seed"].append(seed)
        origin = query_provenance.get(pairs.query_ids[i], _REAL_QUERY)
        for c in QUERY_PROVENANCE:
            cols[c].append(origin[c])

    if fmt == "pairs" or mined is None:
        for i in range(len(pairs)):
            cols["anchor"].append(qtext[i])
            cols["positive"].append(ptext[i])
            prov(i, [], [], float("nan"), "none", None)
        return cols, counts

    rows_all = mined.negative_rows.tolist()
    scores_all = mined.negative_scores.tolist()
    pos_all = mined.positive_scores.tolist()
    for i in range(len(pairs)):
        keep = [j for j, r in enumerate(rows_all[i]) if r >= 0]
        neg_rows = [rows_all[i][j] for j in keep]
        neg_scores = [float(scores_all[i][j]) for j in keep]
        if fmt == "n-tuple":
            if len(neg_rows) < n:
                counts["short_pairs_dropped"] += 1
                continue
            cols["anchor"].append(qtext[i])
            cols["positive"].append(ptext[i])
            for j, r in enumerate(neg_rows):
                cols[f"negative_{j + 1}"].append(corpus.texts[r])
            prov(i, neg_rows, neg_scores, pos_all[i], mined.sampler, mined.seed)
        elif fmt == "triplet":
            for r, s in zip(neg_rows, neg_scores):
                cols["anchor"].append(qtext[i])
                cols["positive"].append(ptext[i])
                cols["negative"].append(corpus.texts[r])
                prov(i, [r], [s], pos_all[i], mined.sampler, mined.seed)
        else:  # labeled-pair: the positive with label 1, then each negative with label 0
            for passage, label, neg, sc in [(ptext[i], 1.0, [], [])] + [
                (corpus.texts[r], 0.0, [r], [s]) for r, s in zip(neg_rows, neg_scores)
            ]:
                cols["sentence1"].append(qtext[i])
                cols["sentence2"].append(passage)
                cols["label"].append(label)
                prov(i, neg, sc, pos_all[i], mined.sampler, mined.seed)
        counts["negatives"] += len(neg_rows)
    return cols, counts


def score_summary(mined: Mined) -> dict:
    """Score statistics for the report: the score space must be visible to judge the kernels."""
    neg = mined.negative_scores[np.isfinite(mined.negative_scores)]
    pos = mined.positive_scores[np.isfinite(mined.positive_scores)]

    def describe(x: np.ndarray) -> dict:
        if len(x) == 0:
            return {"count": 0}
        q = np.percentile(x, [5, 50, 95])
        return {"count": int(len(x)), "mean": float(x.mean()), "min": float(x.min()), "p5": float(q[0]),
                "median": float(q[1]), "p95": float(q[2]), "max": float(x.max())}

    gap = (mined.positive_scores[:, None] - mined.negative_scores)[np.isfinite(mined.negative_scores)]
    return {"negative": describe(neg), "positive": describe(pos), "positive_minus_negative": describe(gap)}
