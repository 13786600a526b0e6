"""Features of a (query, candidate) pair for the false-negative risk model (``fn_risk``).

Cheap and model-agnostic: everything comes from the run's own embeddings, its dense ranking and
BM25 over the corpus. Two groups:

- query side (need no labelled positive): the dense score, its 1-based rank in the query's ranking
  (labelled positives included, clamped past the ranking's depth), the score standardised over the
  query's top ``depth``, the gap to the query's best score, and BM25 normalised and standardised
  over the same top ``depth``;
- positive side (need at least one labelled positive of the query): the dense gap to the min / mean
  / max positive score, the BM25 gap to the best positive, embedding and token-set similarity to
  the positives (max and mean), and how many positives are labelled.

A near-copy of a labelled positive (token-set Jaccard at or above a bound) is reported apart: the
judge flags it whatever the model says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from synth.judge.lexical import Lexical, jaccard

QUERY_FEATURES = ("dense", "log_rank", "dense_z", "gap_to_top1", "bm25_norm", "bm25_z")
POSITIVE_FEATURES = (
    "gap_to_max_positive",
    "gap_to_min_positive",
    "gap_to_mean_positive",
    "bm25_gap_to_positive",
    "max_cos_positive",
    "mean_cos_positive",
    "max_jaccard_positive",
    "mean_jaccard_positive",
    "log_positives",
)

Search = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]  # (query rows, k) -> (scores, rows)


@dataclass
class QueryView:
    """A query's dense top ``depth`` (labelled positives included) and the statistics features use."""

    row: int
    terms: np.ndarray  # BM25 term ids of the query text
    top_rows: np.ndarray  # int64 [k] best first; -1 past the corpus
    top_scores: np.ndarray  # float32 [k] descending
    dense_mean: float
    dense_std: float
    bm25_max: float
    bm25_mean: float
    bm25_std: float

    def ranks(self, scores: np.ndarray, depth: int) -> np.ndarray:
        """1-based rank of each score in this ranking (1 + the number of strictly higher scores of the
        top ``depth``), clamped at ``depth + 1``: past the depth only 'deep' is known."""
        desc = self.top_scores[:depth]
        higher = len(desc) - np.searchsorted(desc[::-1], scores, side="right")
        return np.minimum(higher + 1, depth + 1)


@dataclass
class Passages:
    """Candidates or positives of one query, whatever their origin (corpus rows or outside texts)."""

    emb: np.ndarray  # float32 [m, d]
    bm25: np.ndarray  # float32 [m] BM25 of the query against each
    tokens: list[frozenset]

    def __len__(self) -> int:
        return len(self.tokens)


class FeatureBuilder:
    """Feature rows for the judge's queries. ``search`` gives the run's dense ranking (the same index
    mining used); BM25 and token sets come from ``Lexical`` over the corpus."""

    def __init__(
        self,
        corpus_emb: np.ndarray,
        query_emb: np.ndarray,
        lexical: Lexical,
        query_texts: list[str],
        search: Search,
        depth: int,
    ):
        self.corpus_emb = corpus_emb
        self.query_emb = query_emb
        self.lexical = lexical
        self.query_texts = query_texts
        self.search = search
        self.depth = depth
        self._views: dict[int, QueryView] = {}

    def views(self, query_rows: list[int], extra: int = 0) -> dict[int, QueryView]:
        """Views of these queries, searching ``depth + extra`` ranks for those not seen before (extra
        room for the positives a training query excludes from its candidates)."""
        todo = [
            r
            for r in dict.fromkeys(query_rows)
            if r not in self._views or len(self._views[r].top_rows) < self.depth + extra
        ]
        if todo:
            k = min(self.depth + extra, len(self.corpus_emb))
            scores, rows = self.search(np.asarray(todo, np.int64), k)
            terms = self.lexical.term_ids([self.query_texts[r] for r in todo])
            for i, qr in enumerate(todo):
                ok = rows[i] >= 0
                top_rows, top_scores = rows[i][ok], scores[i][ok].astype(np.float32)
                head = top_rows[: self.depth]
                bm = self.lexical.scores(terms[i], head)
                d = top_scores[: self.depth]
                self._views[qr] = QueryView(
                    qr,
                    terms[i],
                    top_rows,
                    top_scores,
                    float(d.mean()) if len(d) else 0.0,
                    float(d.std()) if len(d) else 0.0,
                    float(bm.max()) if len(bm) else 0.0,
                    float(bm.mean()) if len(bm) else 0.0,
                    float(bm.std()) if len(bm) else 0.0,
                )
        return {r: self._views[r] for r in query_rows}

    def corpus_passages(self, view: QueryView, rows: np.ndarray) -> Passages:
        rows = np.asarray(rows, np.int64)
        emb = np.asarray(self.corpus_emb[rows], np.float32).reshape(len(rows), -1)
        return Passages(emb, self.lexical.scores(view.terms, rows), [self.lexical.token_sets[r] for r in rows.tolist()])

    def outside_passages(self, view: QueryView, texts: list[str], emb: np.ndarray) -> Passages:
        weights, sets = self.lexical.external(texts)
        bm = (
            self.lexical.scores(view.terms, np.arange(len(texts)), weights)
            if weights is not None
            else np.zeros(len(texts), np.float32)
        )
        return Passages(np.asarray(emb, np.float32).reshape(len(texts), -1), bm, sets)

    def matrix(
        self, view: QueryView, cand: Passages, positives: Passages | None, jac: np.ndarray | None = None
    ) -> np.ndarray:
        """Feature rows [len(cand), n_features]: query side, then (when ``positives`` is given and not
        empty) positive side. ``jac``: ``jaccard_matrix(cand, positives)`` when the caller has it."""
        q = np.asarray(self.query_emb[view.row], np.float32)
        s = cand.emb @ q
        top1 = float(view.top_scores[0]) if len(view.top_scores) else 0.0
        cols = [
            s,
            np.log(view.ranks(s, self.depth).astype(np.float64)),
            (s - view.dense_mean) / (view.dense_std + 1e-6),
            s - top1,
            cand.bm25 / (view.bm25_max + 1e-6),
            (cand.bm25 - view.bm25_mean) / (view.bm25_std + 1e-6),
        ]
        if positives is not None and len(positives):
            ps = positives.emb @ q
            cos = cand.emb @ positives.emb.T  # [m, p]
            jac = jaccard_matrix(cand, positives) if jac is None else jac
            cols += [
                s - ps.max(),
                s - ps.min(),
                s - ps.mean(),
                (cand.bm25 - positives.bm25.max()) / (view.bm25_max + 1e-6),
                cos.max(axis=1),
                cos.mean(axis=1),
                jac.max(axis=1),
                jac.mean(axis=1),
                np.full(len(cand), np.log(len(positives))),
            ]
        return (
            np.column_stack([np.asarray(c, np.float64) for c in cols])
            if len(cand)
            else np.zeros((0, len(cols)), np.float64)
        )


def jaccard_matrix(cand: Passages, positives: Passages) -> np.ndarray:
    """Token-set Jaccard [len(cand), len(positives)]."""
    jac = np.asarray([[jaccard(a, b) for b in positives.tokens] for a in cand.tokens], np.float64)
    return jac.reshape(len(cand), len(positives))


def near_copies(jac: np.ndarray, bound: float) -> np.ndarray:
    """Per candidate, the first positive it nearly copies (Jaccard >= bound in ``jac``), or -1."""
    hit = jac >= bound
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1) if jac.size else np.full(len(jac), -1, np.int64)
