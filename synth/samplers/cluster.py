"""``cluster``: diverse hard negatives, one per k-means cluster of the candidate pool.

The pool is the top ``depth`` raw dense ranks minus excluded candidates. Their corpus embeddings are
clustered with k-means into k = min(n, pool size) clusters (squared Euclidean distance), and the
highest-scoring candidate of each cluster is picked, so the ``n`` picks come from ``n`` distinct
clusters instead of ``n`` near-duplicates of the best match. Picks are returned best score first.

k-means: k-means++ seeding (D² sampling) driven by ``uniforms`` keyed by the pair, then up to
``iterations`` Lloyd steps (a pair stops as soon as its assignment no longer changes). It runs
batched over the pairs of a sub-block (numpy, no Python loop per pair); every pair's result depends
on its own pool and keys only. When the pool has fewer than k distinct embeddings, or a cluster
ends empty, the missing slots are filled with the best-scoring candidates not yet picked (those may
share a cluster).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.core.seeding import uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks, picks_from_columns
from synth.core.strict import StrictModel

_GATHER_BUDGET = 1 << 22  # floats of gathered pool embeddings per sub-block (16 MiB: small gathers are faster)
_SAME = 1e-6  # squared distance under which two unit-scale embeddings count as the same point


class ClusterConfig(StrictModel):
    kind: Literal["cluster"] = "cluster"
    depth: int = Field(100, gt=0, description="raw dense ranks clustered (positives included in the count)")
    iterations: int = Field(
        20, ge=0, description="most Lloyd iterations after k-means++ seeding; a pair stops once it converges"
    )


class ClusterSampler:
    kind: ClassVar[str] = "cluster"

    def __init__(self, config: ClusterConfig):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return min(self.config.depth, corpus_size)

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        rows = block.cand_rows[:, : self.config.depth]
        cols = np.full((len(block), n), -1, dtype=np.int64)
        if rows.shape[1] == 0 or n == 0:
            return picks_from_columns(block, cols)
        step = max(1, _GATHER_BUDGET // (rows.shape[1] * ctx.corpus_emb.shape[1]))
        for lo in range(0, len(block), step):
            sl = slice(lo, lo + step)
            cols[sl] = self._sub_block(rows[sl], block.cand_scores[sl, : rows.shape[1]], block.pair_keys[sl], n, ctx)
        return picks_from_columns(block, cols)

    def _sub_block(self, rows, scores, keys, n, ctx) -> np.ndarray:
        valid = rows >= 0
        # Invalid slots hold row 0's embedding; they never join a cluster, a seeding draw or a mean.
        x = np.asarray(ctx.corpus_emb[np.where(valid, rows, 0).ravel()], dtype=np.float32).reshape(*rows.shape, -1)
        sq = np.einsum("bmd,bmd->bm", x, x)
        k = min(n, rows.shape[1])
        centers, active = _kmeans_pp(x, sq, valid, k, uniforms(ctx.seed, keys, "cluster", k * rows.shape[1]))
        assign = _assign(x, sq, valid, centers, active)
        # Lloyd steps on the pairs still moving. A pair whose assignment did not change is at a fixed
        # point (same members -> same centers -> same assignment), so dropping it changes nothing;
        # the steps are memory-bound reads of x, so the working set is compacted once half has settled.
        work = np.arange(len(rows))
        xw, sqw, vw, aw, asg = x, sq, valid, active, assign
        for _ in range(self.config.iterations):
            centers = _update(xw, vw, asg, centers)
            new = _assign(xw, sqw, vw, centers, aw)
            moved = (new != asg).any(axis=1)
            assign[work] = new
            if not moved.any():
                break
            asg = new
            if 2 * moved.sum() <= len(work):
                work, xw, sqw, vw, aw, asg, centers = (a[moved] for a in (work, xw, sqw, vw, aw, asg, centers))
        return _best_per_cluster(scores, valid, assign, k, n)


def _kmeans_pp(x, sq, valid, k, u):
    """k-means++ seeding per pair: the first center uniform over the pool, the next ones with
    probability ∝ squared distance to the nearest chosen center (Gumbel-max over log D²)."""
    b, m, _ = x.shape
    lines = np.arange(b)
    gumbel = -np.log(-np.log(u.reshape(b, k, m)))
    centers = np.zeros((b, k, x.shape[2]), dtype=np.float32)
    active = np.zeros((b, k), dtype=bool)
    d2 = np.ones((b, m))  # uniform first draw
    for j in range(k):
        # Distances are float32 sums; below _SAME a point is taken to coincide with a center.
        eligible = valid & (d2 > _SAME)
        keys = np.where(eligible, np.log(np.where(eligible, d2, 1.0)) + gumbel[:, j], -np.inf)
        pick = np.argmax(keys, axis=1)
        active[:, j] = eligible[lines, pick]
        centers[:, j] = x[lines, pick]
        c = centers[:, j]
        dist = np.maximum(sq - 2.0 * np.einsum("bmd,bd->bm", x, c) + (c * c).sum(axis=1)[:, None], 0.0)
        d2 = np.where(active[:, j][:, None], np.minimum(d2, dist) if j else dist, d2)
        d2[lines, pick] = np.where(active[:, j], 0.0, d2[lines, pick])
    return centers, active


def _assign(x, sq, valid, centers, active) -> np.ndarray:
    """Index of the nearest active center per pool member [B, m]; -1 for invalid members."""
    dist = sq[:, :, None] - 2.0 * np.matmul(x, centers.transpose(0, 2, 1)) + (centers * centers).sum(axis=2)[:, None, :]
    dist = np.where(active[:, None, :], dist, np.inf)
    assign = np.argmin(dist, axis=2)
    return np.where(valid & active.any(axis=1)[:, None], assign, -1)


def _update(x, valid, assign, centers) -> np.ndarray:
    """Lloyd step: each center moves to the mean of its members; an empty one stays put."""
    k = centers.shape[1]
    onehot = (assign[:, :, None] == np.arange(k)[None, None, :]) & valid[:, :, None]
    counts = onehot.sum(axis=1)
    sums = np.matmul(onehot.transpose(0, 2, 1).astype(np.float32), x)
    means = sums / np.maximum(counts, 1)[:, :, None].astype(np.float32)
    return np.where((counts > 0)[:, :, None], means, centers)


def _best_per_cluster(scores, valid, assign, k, n) -> np.ndarray:
    """Columns [B, n]: the best-scoring member of each cluster (best first), then the best of the
    remaining pool for slots left by empty clusters; -1 where the pool is short."""
    b, m = scores.shape
    s = np.where(valid, scores.astype(np.float64), -np.inf)
    member = assign[:, :, None] == np.arange(k)[None, None, :]  # [B, m, k]
    best = np.argmax(np.where(member, s[:, :, None], -np.inf), axis=1)  # [B, k]
    winner = member & (np.arange(m)[None, :, None] == best[:, None, :]) & member.any(axis=1)[:, None, :]
    chosen = winner.any(axis=2)
    # Winners first, then by score; the stable sort keeps rank order among equal scores.
    order = np.lexsort((-s, ~chosen), axis=1)
    quota = np.minimum(valid.sum(axis=1), n)
    cols = np.full((b, n), -1, dtype=np.int64)
    width = min(n, m)
    cols[:, :width] = np.where(np.arange(width)[None, :] < quota[:, None], order[:, :width], -1)
    return cols
