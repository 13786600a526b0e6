"""A run's training rows: mined pairs -> the columns of a sentence-transformers layout (``st.LAYOUTS``)
followed by their provenance columns (``build_rows``); the same rows grouped by query for the plain-file
writers (``grouped_by_query``); and the score statistics of the report.
"""

from __future__ import annotations

import numpy as np

from synth.core.records import MINED, Corpus, Mined, Negative, Pairs, Queries
from synth.formats.base import Group
from synth.formats.st import LAYOUTS, text_columns

PROVENANCE_COLUMNS = [
    "query_id",
    "positive_id",
    "negative_ids",
    "negative_scores",
    "positive_score",
    "sampler",
    "seed",
    "query_origin",
    "query_model",
    "query_prompt_sha256",
    "persona_id",
    "query_type",
    "negative_sources",
]
# Per negative, aligned with negative_ids: the judge cascade's verdict and where it came from (the
# prompt hash list is not named *prompt_sha256: that suffix means one hash per row). Only
# written when the run judged its negatives.
JUDGE_COLUMNS = [
    "negative_verdicts",
    "negative_judge_stages",
    "negative_judge_scores",
    "negative_judge_models",
    "negative_judge_prompt_hashes",
]
# Where a row's query came from: "real" (the source) or "synthetic" (an LLM, with model and prompt hash).
QUERY_PROVENANCE = ["query_origin", "query_model", "query_prompt_sha256", "persona_id", "query_type"]
_REAL_QUERY = {"query_origin": "real", "query_model": "", "query_prompt_sha256": "", "persona_id": "", "query_type": ""}
# Written only when some query has them (so other runs' columns stay as they were), after the provenance
# columns: the document and character offset of a synthetic query's source chunk (``kind: corpus``) and the
# LLM quality judge's verdict. The value for a row without one:
EXTRA_PROVENANCE = {"source_doc_id": "", "source_offset": -1, "query_quality": ""}


def negatives_from_mined(mined: Mined, corpus: Corpus) -> list[list[Negative]]:
    """Per pair, the sampler's picks as ``Negative``s (unfilled slots left out)."""
    out = []
    for rows, scores in zip(mined.negative_rows.tolist(), mined.negative_scores.tolist()):
        out.append([Negative(corpus.ids[r], corpus.texts[r], float(s), MINED) for r, s in zip(rows, scores) if r >= 0])
    return out


def build_rows(
    fmt: str,
    n: int,
    pairs: Pairs,
    mined: Mined | None,
    corpus: Corpus,
    queries: Queries,
    query_provenance: dict[str, dict] | None = None,
    negatives: list[list[Negative] | None] | None = None,
    judged: bool = False,
) -> tuple[dict, dict]:
    """Column dict for ``Dataset.from_dict`` and counts for the report (rows, dropped short pairs).
    ``query_provenance`` maps synthetic query ids to their ``QUERY_PROVENANCE`` values. ``negatives``
    (per pair, aligned with ``pairs``; ``None`` = pair dropped) replaces the mined picks when given
    (judged / mixed negatives); ``judged`` adds the ``JUDGE_COLUMNS``."""
    query_provenance = query_provenance or {}
    qtext = [queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [corpus.texts[r] for r in pairs.positive_rows.tolist()]
    layout = LAYOUTS[fmt]
    out = _Columns(pairs, text_columns(fmt, n), query_provenance, judged)
    counts = {"pairs": len(pairs), "short_pairs_dropped": 0, "negatives": 0}

    if not layout.mines or (mined is None and negatives is None):
        for i in range(len(pairs)):
            if negatives is not None and negatives[i] is None:  # dropped (judge policy, leakage)
                continue
            out.add(i, layout.rows(qtext[i], ptext[i], [], n) or [], float("nan"), "none", None)
        return out.cols, counts

    if negatives is None:
        negatives = negatives_from_mined(mined, corpus)
    pos_all = mined.positive_scores.tolist() if mined is not None else [float("nan")] * len(pairs)
    sampler, seed = (mined.sampler, mined.seed) if mined is not None else ("none", None)
    for i in range(len(pairs)):
        if negatives[i] is None:  # dropped by the judge policy (counted there)
            continue
        rows = layout.rows(qtext[i], ptext[i], negatives[i], n)
        if rows is None:  # fewer negatives than the layout needs
            counts["short_pairs_dropped"] += 1
            continue
        out.add(i, rows, pos_all[i], sampler, seed)
        counts["negatives"] += sum(len(negs) for _, negs in rows)
    return out.cols, counts


class _Columns:
    """``build_rows``' columns, filled one layout row at a time: the text columns, then the provenance, the
    ``EXTRA_PROVENANCE`` some query has, and (``judged``) the ``JUDGE_COLUMNS``."""

    def __init__(self, pairs: Pairs, text: list[str], query_provenance: dict[str, dict], judged: bool):
        self.pairs, self.text, self.query_provenance, self.judged = pairs, text, query_provenance, judged
        self.extra = [c for c in EXTRA_PROVENANCE if any(c in v for v in query_provenance.values())]
        columns = text + PROVENANCE_COLUMNS + self.extra + (JUDGE_COLUMNS if judged else [])
        self.cols: dict[str, list] = {c: [] for c in columns}

    def add(self, i: int, rows: list, pos_score: float, sampler: str, seed) -> None:
        """The layout's rows of pair ``i``, each followed by its provenance."""
        for values, negs in rows:
            for c, v in zip(self.text, values):
                self.cols[c].append(v)
            self._provenance(i, negs, pos_score, sampler, seed)

    def _provenance(self, i: int, negs: list[Negative], pos_score: float, sampler: str, seed) -> None:
        """One row's provenance: its pair, negatives and scores, its query's origin, and the judges' verdicts."""
        cols, pairs = self.cols, self.pairs
        cols["query_id"].append(pairs.query_ids[i])
        cols["positive_id"].append(pairs.positive_ids[i])
        cols["negative_ids"].append([x.id for x in negs])
        cols["negative_scores"].append([x.score for x in negs])
        cols["negative_sources"].append([x.source for x in negs])
        cols["positive_score"].append(pos_score)
        cols["sampler"].append(sampler)
        cols["seed"].append(seed)
        origin = self.query_provenance.get(pairs.query_ids[i], _REAL_QUERY)
        for c in QUERY_PROVENANCE:
            cols[c].append(origin[c])
        for c in self.extra:
            cols[c].append(origin.get(c, EXTRA_PROVENANCE[c]))
        if self.judged:
            cols["negative_verdicts"].append([x.verdict for x in negs])
            cols["negative_judge_stages"].append([x.stage for x in negs])
            cols["negative_judge_scores"].append([x.judge_score for x in negs])
            cols["negative_judge_models"].append([x.model for x in negs])
            cols["negative_judge_prompt_hashes"].append([x.prompt_sha256 for x in negs])


def score_summary(mined: Mined) -> dict:
    """Score statistics for the report: the score space must be visible to judge the kernels."""
    neg = mined.negative_scores[np.isfinite(mined.negative_scores)]
    pos = mined.positive_scores[np.isfinite(mined.positive_scores)]

    def describe(x: np.ndarray) -> dict:
        if len(x) == 0:
            return {"count": 0}
        q = np.percentile(x, [5, 50, 95])
        return {
            "count": int(len(x)),
            "mean": float(x.mean()),
            "min": float(x.min()),
            "p5": float(q[0]),
            "median": float(q[1]),
            "p95": float(q[2]),
            "max": float(x.max()),
        }

    gap = (mined.positive_scores[:, None] - mined.negative_scores)[np.isfinite(mined.negative_scores)]
    return {"negative": describe(neg), "positive": describe(pos), "positive_minus_negative": describe(gap)}


def grouped_by_query(
    pairs: Pairs,
    corpus: Corpus,
    queries: Queries,
    negatives: list[list[Negative] | None],
    promoted: list[tuple[str, str]] = (),
) -> list[Group]:
    """(query_id, query, positives [(id, text)], negatives [(id, text)]) per query, in pair order; a query's
    negatives are the union of its pairs' (first occurrence kept); ``promoted`` adds relabelled positives."""
    order: dict[str, tuple[str, dict, dict]] = {}
    for i in range(len(pairs)):
        if negatives[i] is None:
            continue
        qid = pairs.query_ids[i]
        _, pos, neg = order.setdefault(qid, (queries.texts[int(pairs.query_rows[i])], {}, {}))
        pos.setdefault(pairs.positive_ids[i], corpus.texts[int(pairs.positive_rows[i])])
        for x in negatives[i]:
            neg.setdefault(x.id, x.text)
    row_of = corpus.row_of
    for qid, doc_id in promoted:
        if qid in order and doc_id in row_of:
            order[qid][1].setdefault(doc_id, corpus.texts[row_of[doc_id]])
            order[qid][2].pop(doc_id, None)
    return [
        (qid, q, list(pos.items()), [n for n in neg.items() if n[0] not in pos]) for qid, (q, pos, neg) in order.items()
    ]
