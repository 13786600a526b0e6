"""Query-type quotas and per-document caps for synthetic queries (``synthetic_queries.type_quotas`` and
``max_queries_per_doc``). Plain functions over ids and seeds: the same inputs give the same answer in every
process.

A quota is a share per type; over ``total`` queries type ``t`` gets ``floor(share_t * total)`` plus one of
the leftover units by largest remainder (ties in canonical type order), so the counts sum to ``total`` and
each is within 1 of its exact share. It is held twice: in the plan (``assign_types``: a seeded permutation of
the (document, persona) slots takes the types in quota counts) and over the kept queries after the filters
(``hold_quotas``: the largest total whose quota counts every type can still fill; the surplus of a type is
dropped in a seeded order), because the filters do not drop every type alike.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from synth.core.seeding import stable_key, uniforms
from synth.generate.config import QUERY_TYPES


def quota_targets(shares: dict[str, float], total: int) -> dict[str, int]:
    """Counts per type summing to ``total``, each ``floor`` or ``ceil`` of ``share * total``."""
    types = [t for t in QUERY_TYPES if t in shares]
    exact = {t: shares[t] * total for t in types}
    counts = {t: math.floor(exact[t] + 1e-9) for t in types}
    left = total - sum(counts.values())
    by_remainder = sorted(types, key=lambda t: (-(exact[t] - counts[t]), types.index(t)))
    for t in by_remainder[:left]:
        counts[t] += 1
    return counts


def _seeded_rank(keys: list[str], seed: int, salt: str) -> np.ndarray:
    if not keys:
        return np.empty(0, np.int64)
    ks = np.fromiter((stable_key(k) for k in keys), dtype=np.uint64, count=len(keys))
    return np.argsort(uniforms(seed, ks, salt, 1)[:, 0], kind="stable")


def assign_types(slot_keys: list[str], shares: dict[str, float], seed: int) -> list[str]:
    """One type per slot, in quota counts over all slots; which slot gets which type is seeded by its key."""
    targets = quota_targets(shares, len(slot_keys))
    sequence = [t for t in QUERY_TYPES if t in targets for _ in range(targets[t])]
    out = [""] * len(slot_keys)
    for position, slot in enumerate(_seeded_rank(slot_keys, seed, "queries.quota").tolist()):
        out[slot] = sequence[position]
    return out


def hold_quotas(ids: list[str], types: list[str], shares: dict[str, float], seed: int) -> list[bool]:
    """Keep mask: the most queries whose type counts are the quota counts of their total (surplus dropped,
    seeded by query id). Types outside the quotas are dropped."""
    have = Counter(t for t in types if t in shares)
    total = sum(have.values())
    while total and any(n > have[t] for t, n in quota_targets(shares, total).items()):
        total -= 1
    room = quota_targets(shares, total) if total else {}
    keep = [False] * len(ids)
    for i in _seeded_rank(ids, seed, "queries.quota.kept").tolist():
        if room.get(types[i], 0) > 0:
            room[types[i]] -= 1
            keep[i] = True
    return keep
