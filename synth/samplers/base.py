"""The sampler protocol and the pieces every sampler shares.

A sampler gets a ``PairBlock`` — a block of (query, positive) pairs with their dense candidate
ranking already computed, positives / query-text duplicates / filtered candidates masked out — and
returns ``Picks``: ``n`` corpus rows per pair with their scores.

Randomness is counter-based (``synth.core.seeding``): a pair's draws depend only on the seed and
the pair's ids, never on the block size, the block order, or which other pairs are in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from synth.core.records import Corpus, Queries
from synth.samplers.filters import keep_mask


@dataclass
class PairBlock:
    """A block of B (query, positive) pairs with their dense candidates.

    ``cand_rows[:, j]`` is the corpus row at raw rank j of the query's dense ranking (rank 0 = most
    similar), *before* any exclusion: excluded candidates (labelled positives, documents whose text
    equals the query, filtered ones, padding) are set to -1 with score -inf, so column j is still
    raw rank j.
    """

    query_ids: list[str]
    positive_ids: list[str]
    pair_keys: np.ndarray  # uint64 [B] stable_key(query_id, positive_id)
    query_keys: np.ndarray  # uint64 [B] stable_key(query_id)
    query_rows: np.ndarray  # int64 [B]
    positive_rows: np.ndarray  # int64 [B] this pair's own positive
    all_positive_rows: list[np.ndarray]  # per pair: every labelled positive of the query
    excluded_rows: list[np.ndarray]  # per pair: rows never allowed (positives + query-text duplicates)
    positive_score: np.ndarray  # float32 [B] s(q, this pair's positive)
    anchor_score: np.ndarray  # float32 [B] min or max positive score, per mine.positive_anchor
    max_positive_score: np.ndarray  # float32 [B] max over the query's positives
    cand_rows: np.ndarray  # int64 [B, K]
    cand_scores: np.ndarray  # float32 [B, K]

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class Picks:
    rows: np.ndarray  # int64 [B, n]; -1 = could not fill
    scores: np.ndarray  # float32 [B, n]; NaN where rows == -1
    extra: dict[str, Any] = field(default_factory=dict)  # per-sampler diagnostics for the report


@dataclass
class MiningContext:
    """What a sampler may use besides its block: embeddings, texts, seed, filters, a shared cache."""

    corpus: Corpus
    queries: Queries
    corpus_emb: np.ndarray  # float32 [N, d] (may be a memmap)
    query_emb: np.ndarray  # float32 [Q, d]
    seed: int
    filters: list = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. a BM25 index built once per run

    def score(self, query_rows: np.ndarray, doc_rows: np.ndarray) -> np.ndarray:
        """Dense scores s(q, d) [B, m] for arbitrary doc rows; -inf where a row is -1."""
        safe = np.where(doc_rows >= 0, doc_rows, 0)
        docs = np.asarray(self.corpus_emb[safe.ravel()]).reshape(*safe.shape, -1)
        q = np.asarray(self.query_emb[query_rows])
        s = np.einsum("bd,bmd->bm", q, docs).astype(np.float32)
        s[doc_rows < 0] = -np.inf
        return s

    def admissible(self, block: PairBlock, doc_rows: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Mask [B, m] of doc rows that are not excluded for their pair and pass every filter.
        For samplers that draw outside the dense pool (random, bm25)."""
        ok = doc_rows >= 0
        for i, excluded in enumerate(block.excluded_rows):
            if len(excluded):
                ok[i] &= ~np.isin(doc_rows[i], excluded)
        return ok & keep_mask(self.filters, scores, block.anchor_score)


def picks_from_columns(block: PairBlock, cols: np.ndarray) -> Picks:
    """Turn chosen candidate columns [B, n] (-1 = none) into ``Picks``."""
    safe = np.where(cols >= 0, cols, 0)
    rows = np.take_along_axis(block.cand_rows, safe, axis=1)
    scores = np.take_along_axis(block.cand_scores, safe, axis=1).astype(np.float32)
    rows = np.where(cols >= 0, rows, -1)
    scores = np.where(cols >= 0, scores, np.nan).astype(np.float32)
    return Picks(rows=rows, scores=scores)


class Sampler(Protocol):
    """One protocol for every sampler; one module per implementation; one registry line each."""

    kind: ClassVar[str]

    def candidate_depth(self, corpus_size: int) -> int:
        """How many raw dense ranks (positives included) the block must carry; 0 for none."""
        ...

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        """Pick ``n`` negatives per pair. Never returns an excluded row; -1 where short."""
        ...

    # Optional: ``backfill_start_rank`` (int, default 0), the first raw rank backfill may take when this
    # sampler leaves a pair short (``topk`` sets it to its ``range_min``).
