"""The sampler protocol and the pieces every sampler shares.

A sampler gets a ``PairBlock`` — a block of (query, positive) pairs with their dense candidate
ranking already computed, positives / query-text duplicates / filtered candidates masked out — and
returns ``Picks``: ``n`` corpus rows per pair with their scores.

Randomness is counter-based: ``uniforms(seed, keys, salt, K)`` hashes (seed, pair key, salt,
column) into U(0,1). A pair's draws therefore depend only on the seed and the pair's ids, never
on the block size, the block order, or which other pairs are in the run. Changing the search
block size (a memory knob) does not change the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from synth.core.records import Corpus, Queries
from synth.samplers.filters import keep_mask

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def stable_key(*parts: str) -> int:
    """A 64-bit key that is stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed: int, keys: np.ndarray, salt: str, k: int) -> np.ndarray:
    """float64 [B, k] in the open interval (0, 1), a pure function of (seed, key, salt, column)."""
    base = _splitmix64(keys.astype(np.uint64) ^ np.uint64(stable_key(str(seed), salt)))
    cols = np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = _splitmix64(base[:, None] * np.uint64(0x9E3779B97F4A7C15) + cols[None, :])
    # 53 random bits -> (0, 1); the +0.5 keeps 0 out so log(u) is finite.
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def seeded_subset(seed: int, key: str, items: list, k: int, salt: str) -> list:
    """The first ``k`` of ``items`` in an order drawn from (seed, key, salt): a pure function of them and
    the items, independent of anything else in the run. Returned in the items' own order."""
    u = uniforms(seed, np.asarray([stable_key(key)], np.uint64), salt, len(items))[0]
    chosen = set(np.argsort(u, kind="stable")[:k].tolist())
    return [x for j, x in enumerate(items) if j in chosen]


def gumbel_top(log_weights: np.ndarray, u: np.ndarray, n: int) -> np.ndarray:
    """Weighted sampling of ``n`` columns per row without replacement (Efraimidis–Spirakis via the
    Gumbel-top-k trick). ``log_weights`` is -inf for inadmissible columns. Returns column indices
    [B, n]; a slot is -1 when the row has fewer than ``n`` admissible columns."""
    keys = log_weights - np.log(-np.log(u))
    n_eff = min(n, keys.shape[1])
    if n_eff == 0:
        return np.full((keys.shape[0], n), -1, dtype=np.int64)
    part = np.argpartition(-keys, n_eff - 1, axis=1)[:, :n_eff]
    order = np.argsort(-np.take_along_axis(keys, part, axis=1), axis=1, kind="stable")
    cols = np.take_along_axis(part, order, axis=1).astype(np.int64)
    valid = np.isfinite(np.take_along_axis(keys, cols, axis=1))
    cols[~valid] = -1
    if n_eff < n:
        cols = np.concatenate([cols, np.full((cols.shape[0], n - n_eff), -1, dtype=np.int64)], axis=1)
    return cols


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
