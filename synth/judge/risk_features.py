"""Features of a (query, candidate) pair for the false-negative risk model (``fn_risk``).

Cheap and model-agnostic: everything comes from the run's own embeddings, its dense ranking and
lexical statistics of the corpus (``synth.judge.lexical``). A query's *pool* is its top ``depth``
dense ranks (labelled positives included); most features are a candidate's standing within that
pool, so that one scale holds across queries and collections.

- query side: the dense score, its 1-based rank (clamped past the pool: only 'deep' is known), the
  dense score and the BM25 score standardised over the pool;
- positive side (the query's known positives): the highest cosine to one of them, how many there
  are, and, standardised over the pool, the similarity to their centroid (dense and lexical), the
  highest lexical cosine to one of them, and the similarity to the query moved towards them
  (Rocchio's feedback, dense and lexical); and the candidate's best rank within the pool by
  similarity to one positive (dense and lexical): relevant documents sit near each other.

Ablations on Cranfield and NPL (three probe seeds each) kept these 13 of 31 candidate features:
the others (gaps to the positives' scores, Jaccard, pseudo-relevance feedback from the top ranks,
ranks in each positive's corpus-wide neighbourhood) added nothing the set does not already hold.

A near-copy of a labelled positive (term-set Jaccard at or above a bound) is reported apart: the
judge flags it whatever the model says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sp

from synth.judge.lexical import Lexical, jaccard, unit_rows

FEATURES = (
    "dense",
    "log_rank",
    "dense_z",
    "bm25_z",
    "max_cos_positive",
    "log_positives",
    "centroid_cos_z",
    "centroid_lexical_z",
    "max_lexical_z",
    "log_pool_rank_dense",
    "log_pool_rank_lexical",
    "rocchio_z",
    "rocchio_lexical_z",
)

Search = Callable[[np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]  # (query rows, k) -> (scores, rows)
EPS = 1e-6
# Scores within TIE of each other are equal: a candidate's own score, computed in a batch of another size or
# by the index, may differ from itself in the last float32 bits, and must not rank it below itself.
TIE = 1e-5


@dataclass
class Passages:
    """Candidates or positives of one query, whatever their origin (corpus rows or outside texts)."""

    emb: np.ndarray  # float32 [m, d]
    lexical: sp.csr_matrix  # unit-length BM25 term weights [m, vocab]
    bm25: np.ndarray  # float32 [m] BM25 of the query against each

    def __len__(self) -> int:
        return len(self.bm25)


@dataclass
class QueryView:
    """A query's dense ranking (labelled positives included) and its pool statistics."""

    row: int
    terms: np.ndarray  # BM25 term ids of the query text
    lexical: sp.csr_matrix  # the query's unit lexical vector [1, vocab]
    top_rows: np.ndarray  # int64 [k] best first
    top_scores: np.ndarray  # float32 [k] descending
    pool: Passages  # the top ``depth`` ranks

    def ranks(self, scores: np.ndarray, depth: int) -> np.ndarray:
        """1-based rank of each score in this ranking (1 + the number of strictly higher scores of the
        pool), clamped at ``depth + 1``."""
        desc = self.top_scores[:depth]
        higher = len(desc) - np.searchsorted(desc[::-1], scores + TIE, side="right")
        return np.minimum(higher + 1, depth + 1)


class FeatureBuilder:
    """Feature rows for the judge's queries. ``search`` gives the run's dense ranking (the same index
    mining used); BM25 and lexical vectors come from ``Lexical`` over the corpus."""

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
        """Views of these queries, searching ``depth + extra`` ranks for those not seen that deep before
        (extra room for deeper candidates and the positives a training query excludes)."""
        want = min(self.depth + extra, len(self.corpus_emb))
        todo = [r for r in dict.fromkeys(query_rows) if r not in self._views or len(self._views[r].top_rows) < want]
        if todo:
            scores, rows = self.search(np.asarray(todo, np.int64), want)
            terms = self.lexical.term_ids([self.query_texts[r] for r in todo])
            for i, qr in enumerate(todo):
                ok = rows[i] >= 0
                top_rows, top_scores = rows[i][ok].astype(np.int64), scores[i][ok].astype(np.float32)
                pool_rows = top_rows[: self.depth]
                pool = Passages(
                    np.asarray(self.corpus_emb[pool_rows], np.float32).reshape(len(pool_rows), -1),
                    self.lexical.unit[pool_rows],
                    self.lexical.scores(terms[i], pool_rows),
                )
                self._views[qr] = QueryView(
                    qr, terms[i], self.lexical.query_vector(terms[i]), top_rows, top_scores, pool
                )
        return {r: self._views[r] for r in query_rows}

    def corpus_passages(self, view: QueryView, rows: np.ndarray) -> Passages:
        rows = np.asarray(rows, np.int64)
        emb = np.asarray(self.corpus_emb[rows], np.float32).reshape(len(rows), -1)
        return Passages(emb, self.lexical.unit[rows], self.lexical.scores(view.terms, rows))

    def outside_passages(self, view: QueryView, texts: list[str], emb: np.ndarray) -> Passages:
        weights = self.lexical.external(texts)
        bm = self.lexical.scores(view.terms, np.arange(len(texts)), weights)
        return Passages(np.asarray(emb, np.float32).reshape(len(texts), -1), unit_rows(weights), bm)

    def matrix(self, view: QueryView, cand: Passages, positives: Passages) -> np.ndarray:
        """Feature rows [len(cand), len(FEATURES)] against the query's known ``positives`` (at least one)."""
        if not len(cand):
            return np.zeros((0, len(FEATURES)), np.float64)
        pool = view.pool
        q = np.asarray(self.query_emb[view.row], np.float32)
        s = cand.emb @ q
        cos, pool_cos = cand.emb @ positives.emb.T, pool.emb @ positives.emb.T  # [m, p], [D, p]
        lex, pool_lex = _dense(cand.lexical @ positives.lexical.T), _dense(pool.lexical @ positives.lexical.T)
        centroid = _unit(positives.emb.mean(axis=0))
        lex_centroid = unit_rows(sp.csr_matrix(positives.lexical.mean(axis=0)))
        rocchio = _unit(q + centroid)
        lex_rocchio = unit_rows(view.lexical + lex_centroid)
        pool_s = pool.emb @ q
        cols = [
            s,
            np.log(view.ranks(s, self.depth).astype(np.float64)),
            _z(s, pool_s),
            _z(cand.bm25, pool.bm25),
            cos.max(axis=1),
            np.full(len(cand), np.log(len(positives))),
            _z(cand.emb @ centroid, pool.emb @ centroid),
            _z(_dense(cand.lexical @ lex_centroid.T)[:, 0], _dense(pool.lexical @ lex_centroid.T)[:, 0]),
            _z(lex.max(axis=1), pool_lex.max(axis=1)),
            np.log(_pool_rank(cos, pool_cos).min(axis=1)),
            np.log(_pool_rank(lex, pool_lex).min(axis=1)),
            _z(cand.emb @ rocchio, pool.emb @ rocchio),
            _z(_dense(cand.lexical @ lex_rocchio.T)[:, 0], _dense(pool.lexical @ lex_rocchio.T)[:, 0]),
        ]
        return np.column_stack([np.asarray(c, np.float64) for c in cols])


def _dense(m) -> np.ndarray:
    return np.asarray(m.todense() if sp.issparse(m) else m, np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _z(x: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``x`` standardised by the pool's mean and spread (the query's own scale)."""
    pool = np.asarray(pool, np.float64)
    if not len(pool):
        return np.zeros(len(x))
    return (np.asarray(x, np.float64) - pool.mean()) / (pool.std() + EPS)


def _pool_rank(sim: np.ndarray, pool_sim: np.ndarray) -> np.ndarray:
    """[m, p]: 1 + the number of pool documents more similar to positive j than candidate i is."""
    ordered = np.sort(pool_sim, axis=0)
    out = np.empty(sim.shape, np.float64)
    for j in range(sim.shape[1]):
        out[:, j] = len(ordered) - np.searchsorted(ordered[:, j], sim[:, j] + TIE, side="right") + 1
    return out


def near_copies(cand: Passages, positives: Passages, bound: float) -> np.ndarray:
    """Per candidate, the first positive whose term set it nearly copies (Jaccard >= bound), or -1."""
    if not len(cand) or not len(positives):
        return np.full(len(cand), -1, np.int64)
    hit = jaccard(cand.lexical, positives.lexical) >= bound
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
