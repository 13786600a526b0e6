"""Counter-based randomness: every draw is a pure function of (seed, item key, salt, column).

``uniforms(seed, keys, salt, K)`` hashes (seed, key, salt, column) into U(0,1). An item's draws
therefore depend only on the seed and the item's ids, never on block sizes, block order, or which
other items are in the run: changing a memory knob (the search block size) does not change the data,
and a resumed run draws what the first one drew. Samplers, generation, judges and the probe all draw
through this module.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_key(*parts: str) -> int:
    """A 64-bit key that is stable across processes and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays: a cheap, well-mixed bijection."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def uniforms(seed: int, keys: np.ndarray, salt: str, k: int) -> np.ndarray:
    """float64 [B, k] in the open interval (0, 1), a pure function of (seed, key, salt, column)."""
    base = splitmix64(keys.astype(np.uint64) ^ np.uint64(stable_key(str(seed), salt)))
    cols = np.arange(k, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = splitmix64(base[:, None] * np.uint64(0x9E3779B97F4A7C15) + cols[None, :])
    # 53 random bits -> (0, 1); the +0.5 keeps 0 out so log(u) is finite.
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def request_seed(seed: int, *parts: str) -> int:
    """A per-request sampling seed derived from (recipe seed, item key); 31 bits so every server takes it."""
    return stable_key(str(seed), *parts) & 0x7FFFFFFF


def seeded_subset(seed: int, key: str, items: list, k: int, salt: str) -> list:
    """The first ``k`` of ``items`` in an order drawn from (seed, key, salt): a pure function of them and
    the items, independent of anything else in the run. Returned in the items' own order."""
    u = uniforms(seed, np.asarray([stable_key(key)], np.uint64), salt, len(items))[0]
    chosen = set(np.argsort(u, kind="stable")[:k].tolist())
    return [x for j, x in enumerate(items) if j in chosen]


def seeded_order(ids: list[str], seed: int, salt: str) -> list[int]:
    """Indices of ``ids`` in a seeded random order that depends only on (seed, salt, id), never on the
    list's order: taking a prefix is a uniform sample without replacement, and a longer prefix
    extends a shorter one."""
    if not ids:
        return []
    keys = np.fromiter((stable_key(i) for i in ids), dtype=np.uint64, count=len(ids))
    u = uniforms(seed, keys, salt, 1)[:, 0]  # 53-bit draws: ties are practically impossible
    return np.argsort(u, kind="stable").tolist()


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
