"""Mixing: per (query, positive) pair, the mined negatives the judges kept plus LLM-written ones.

Input per pair: the mined pool in the sampler's order and the pair's synthetic negatives, each a
``Negative`` carrying its verdict (when judged), and the set of candidates the policy kept. Output
per pair: up to ``synthetic`` kept synthetic negatives and ``mined`` kept mined ones, deduplicated
by normalised text across both sources (and against the positive); synthetic slots a pair cannot
fill are refilled with further mined negatives, so a pair without synthetic negatives still gets
``mined + synthetic`` of them when its pool allows. Order in a row: mined first, then synthetic.
"""

from __future__ import annotations

from typing import Sequence

from pydantic import Field

from synth.core.records import SYNTHETIC, Negative
from synth.core.strict import Section
from synth.core.text import normal_text


class MixStats(Section):
    """How mined and synthetic negatives were combined: ``report.json`` -> ``mix``."""

    pairs: int = 0
    mined_candidates: int = 0
    synthetic_candidates: int = 0
    removed_by_policy: int = 0  # candidates (either source) the policy did not keep
    dropped_duplicates: int = 0  # same normalised text as the positive or an earlier negative
    mined_used: int = 0
    synthetic_used: int = 0
    pairs_with_synthetic: int = 0
    synthetic_slots_refilled_by_mined: int = 0
    pairs_short: int = 0  # fewer than mined + synthetic negatives after refilling
    pairs_dropped_by_policy: int = 0
    target: dict[str, int] = Field(default_factory=dict, description="negatives per pair: {mined, synthetic}")


def mix_pair(
    positive_text: str,
    mined: Sequence[Negative],
    synthetic: Sequence[Negative],
    n_mined: int,
    n_synthetic: int,
    stats: MixStats,
) -> list[Negative]:
    """The pair's negatives: kept inputs only (callers pass what the policy kept), deduplicated, capped."""
    seen = {normal_text(positive_text)}

    def take(items: Sequence[Negative], limit: int) -> list[Negative]:
        out: list[Negative] = []
        for neg in items:
            if len(out) >= limit:
                break
            key = normal_text(neg.text)
            if key in seen:
                stats.dropped_duplicates += 1
                continue
            seen.add(key)
            out.append(neg)
        return out

    # Synthetic first, so a mined passage never crowds out the (rarer) synthetic one it duplicates.
    chosen_syn = take(synthetic, n_synthetic)
    chosen_mined = take(mined, n_mined)
    missing = n_synthetic - len(chosen_syn)
    if missing > 0:
        rest = [m for m in mined if m not in chosen_mined]
        extra = take(rest, missing)
        stats.synthetic_slots_refilled_by_mined += len(extra)
        chosen_mined += extra
    stats.mined_used += len(chosen_mined)
    stats.synthetic_used += len(chosen_syn)
    stats.pairs_with_synthetic += int(bool(chosen_syn))
    stats.pairs_short += int(len(chosen_mined) + len(chosen_syn) < n_mined + n_synthetic)
    return chosen_mined + chosen_syn


def mix(
    positive_texts: Sequence[str],
    mined_pool: Sequence[Sequence[Negative]],
    synthetic: Sequence[Sequence[Negative]],
    kept: Sequence[set[str] | None],
    n_mined: int,
    n_synthetic: int,
) -> tuple[list[list[Negative] | None], MixStats]:
    """Per pair (aligned lists): its negatives, or ``None`` when the policy dropped the pair.
    ``kept[i]`` is the set of candidate ids the policy kept for pair i (``None``: pair dropped)."""
    stats = MixStats(pairs=len(positive_texts), target={"mined": n_mined, "synthetic": n_synthetic})
    out: list[list[Negative] | None] = []
    for pos, pool, syn, keep in zip(positive_texts, mined_pool, synthetic, kept):
        stats.mined_candidates += len(pool)
        stats.synthetic_candidates += len(syn)
        if keep is None:
            stats.pairs_dropped_by_policy += 1
            out.append(None)
            continue
        pool_kept = [m for m in pool if m.id in keep]
        syn_kept = [s for s in syn if s.id in keep]
        stats.removed_by_policy += len(pool) + len(syn) - len(pool_kept) - len(syn_kept)
        out.append(mix_pair(pos, pool_kept, syn_kept, n_mined, n_synthetic, stats))
    return out, stats


def synthetic_by_pair(
    query_ids: Sequence[str], positive_ids: Sequence[str], query_rows, negatives, query_emb, embed_passages
) -> list[list[Negative]]:
    """Per pair (aligned with the given ids), its LLM-written negatives (``SyntheticNegative``s are keyed
    by (query_id, positive_id)) as ``Negative``s scored s(q, d-) with the run's embedder, in id order."""
    import numpy as np

    of_pair: dict[tuple[str, str], list] = {}
    for neg in sorted(negatives, key=lambda x: x.id):
        of_pair.setdefault((neg.query_id, neg.positive_id), []).append(neg)
    out: list[list[Negative]] = [[] for _ in query_ids]
    wanted = [(i, neg) for i, key in enumerate(zip(query_ids, positive_ids)) for neg in of_pair.get(key, [])]
    if not wanted:
        return out
    texts = list(dict.fromkeys(neg.text for _, neg in wanted))
    emb = np.asarray(embed_passages(texts))
    row_of = {t: r for r, t in enumerate(texts)}
    for i, neg in wanted:
        score = float(np.dot(np.asarray(query_emb[int(query_rows[i])]), emb[row_of[neg.text]]))
        out[i].append(Negative(neg.id, neg.text, score, SYNTHETIC, model=neg.model, prompt_sha256=neg.prompt_sha256))
    return out
