"""Shards the driver cuts, so no engine ever decides where a unit of work ends.

sentence-transformers' output depends on which texts are encoded together and FAISS breaks near-ties by
its heap, so a shard is a fixed function of the work: sorted stable ids (or row numbers) cut at fixed
sizes. Corpus shards for exact search are contiguous row ranges; their top-k lists merge into exactly
the single search's list (``merge_topk``), ties by (score desc, corpus row asc) as ``synth.index.order_ties``.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def fixed_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` row ranges of ``size`` rows (the last may be shorter) covering ``range(n)``."""
    if size < 1:
        raise ValueError("shard size must be >= 1")
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def split_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ranges of near-equal size covering ``range(n)`` (empty ones dropped)."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


def shard_ids(ids: Sequence[T], size: int) -> list[list[T]]:
    """The distinct ``ids`` sorted, cut into shards of ``size``: the same shards whatever order the
    ids came in (stable ids: content hashes, record ids; never Python's ``hash()``)."""
    ordered = sorted(set(ids))
    return [ordered[lo:hi] for lo, hi in fixed_ranges(len(ordered), size)]


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists ``(scores [b, k_i], global rows [b, k_i])`` into the top ``k`` of their
    union, ordered by score descending then corpus row ascending; -1 rows (padding) last with -inf.
    Each shard's exact top-k holds every member of the global top-k that lives in it, so the merge equals
    one exact search over the whole corpus, ties included (faiss keeps the lowest rows among equal scores
    at the cut, and so does each shard)."""
    from synth.index import order_ties

    scores = np.concatenate([np.asarray(p[0], np.float32) for p in parts], axis=1)
    rows = np.concatenate([np.asarray(p[1], np.int64) for p in parts], axis=1)
    scores, rows = order_ties(scores, rows)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.concatenate([scores, np.full((len(scores), pad), -np.inf, np.float32)], axis=1)
        rows = np.concatenate([rows, np.full((len(rows), pad), -1, np.int64)], axis=1)
    return np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(rows[:, :k])
