"""``trisampler``: TriSampler (Yang et al., AAAI 2024, "TriSampler: A Better Negative Sampling
Principle for Dense Retrieval", arXiv 2402.11855).

The paper's *quasi-triangular principle* keeps negatives inside a triangle-like region spanned by
the query q and its positive d⁺. For each pair, from the top ``depth`` raw dense ranks:

1. Region (paper): with θ(x, y) the angle between two embeddings,

       |θ(q, d⁺) − θ(q, d⁻)| ≤ max_angle_deg          (60° in the paper)

   i.e. d⁻ lies at about the same angular distance from q as d⁺ does. Candidates outside get
   weight 0 and are never returned.
2. Positive side (paper): weight ∝ ReLU(s(d⁺, d⁻) − s(q, d⁻)), so a negative must be more
   similar to the positive than to the query; s(d⁺, d⁻) is the dot product of the two corpus
   embeddings, s(q, d⁻) the dense score. ``positive_side: false`` drops this factor.
3. Hardness (paper): weight ∝ exp(−a·(c·s(q,d⁻) − c·s(q,d⁺) − b)²), the SimANS-style kernel over
   the top-K, with s(q,d⁺) this pair's positive score. The paper's summary gives
   exp(−(s⁻ − s⁺)²/4), hence the default a = 0.25, b = 0.

Our choices: the two weights of 2. and 3. are multiplied into one distribution (the paper
presents them as two distributions enforcing the region), ``n`` are drawn without replacement
with ``gumbel_top``, b and ``score_scale`` (c) follow ``simans`` (see its docstring: with cosine
scores the kernel is nearly flat unless c ≈ 30). The formulas above come from a summary of the
paper, not from the official code, which we have not seen.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.core.seeding import gumbel_top, uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks, picks_from_columns
from synth.samplers.simans import kernel_log_weights
from synth.core.strict import StrictModel

_GATHER_BUDGET = 1 << 22  # floats of gathered candidate embeddings per sub-block (16 MiB: small gathers are faster)


class TriSamplerConfig(StrictModel):
    kind: Literal["trisampler"] = "trisampler"
    depth: int = Field(100, gt=0, description="raw dense ranks sampled from (positives included in the count)")
    max_angle_deg: float = Field(
        60.0, gt=0.0, le=180.0, description="region: |angle(q,d⁺) − angle(q,d⁻)| must not exceed it"
    )
    positive_side: bool = Field(True, description="weight by ReLU(s(d⁺,d⁻) − s(q,d⁻)): closer to d⁺ than to q")
    a: float = Field(0.25, ge=0.0, description="kernel sharpness: ∝ exp(−a·(c·s⁻ − c·s⁺ − b)²)")
    b: float = Field(0.0, description="kernel offset, in scaled units")
    score_scale: float = Field(1.0, gt=0.0, description="c: scores are multiplied by it before the kernel")


class TriSampler:
    kind: ClassVar[str] = "trisampler"

    def __init__(self, config: TriSamplerConfig):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return min(self.config.depth, corpus_size)

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        c = self.config
        scores = block.cand_scores[:, : c.depth]
        log_w = kernel_log_weights(scores, block.positive_score, c.a, c.b, c.score_scale)
        region = self.region_log_weights(block, ctx)
        u = uniforms(ctx.seed, block.pair_keys, "trisampler", scores.shape[1])
        picks = picks_from_columns(block, gumbel_top(log_w + region, u, n))
        # Summed over blocks by the miner: how many pool candidates the region turned away.
        picks.extra["trisampler_outside_region"] = int((np.isfinite(scores) & ~np.isfinite(region)).sum())
        return picks

    def region_log_weights(self, block: PairBlock, ctx: MiningContext) -> np.ndarray:
        """log of the region indicator times ReLU(s(d⁺,d⁻) − s(q,d⁻)) [B, depth]; -inf outside."""
        c = self.config
        rows = block.cand_rows[:, : c.depth]
        out = np.full(rows.shape, -np.inf)
        if rows.shape[1] == 0:
            return out
        dim = ctx.corpus_emb.shape[1]
        step = max(1, _GATHER_BUDGET // (rows.shape[1] * dim))
        for lo in range(0, len(block), step):
            sl = slice(lo, lo + step)
            out[sl] = _region(
                rows[sl],
                block.cand_scores[sl, : c.depth],
                np.asarray(ctx.query_emb[block.query_rows[sl]], dtype=np.float64),
                np.asarray(ctx.corpus_emb[block.positive_rows[sl]], dtype=np.float64),
                ctx,
                np.deg2rad(c.max_angle_deg),
                c.positive_side,
            )
        return out


def _region(rows, scores, q, p, ctx, max_angle, positive_side) -> np.ndarray:
    valid = rows >= 0
    docs = np.asarray(ctx.corpus_emb[np.where(valid, rows, 0).ravel()], dtype=np.float32).reshape(*rows.shape, -1)
    q_norm = np.linalg.norm(q, axis=1)
    doc_norm = np.sqrt(np.einsum("bmd,bmd->bm", docs, docs).astype(np.float64))
    angle_pos = _angle(np.einsum("bd,bd->b", q, p), q_norm * np.linalg.norm(p, axis=1))
    q_dot_d = np.einsum("bmd,bd->bm", docs, q.astype(np.float32)).astype(np.float64)
    angle_neg = _angle(q_dot_d, q_norm[:, None] * doc_norm)
    # A small tolerance so that float noise never drops a candidate sitting on the boundary.
    inside = valid & (np.abs(angle_pos[:, None] - angle_neg) <= max_angle + 1e-9)
    log_w = np.zeros(rows.shape)
    if positive_side:
        to_positive = np.einsum("bmd,bd->bm", docs, p.astype(np.float32)).astype(np.float64)
        margin = to_positive - np.where(valid, scores, 0.0)
        inside &= margin > 0
        log_w = np.log(np.where(margin > 0, margin, 1.0))
    return np.where(inside, log_w, -np.inf)


def _angle(dot: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Angle in radians from a dot product and the product of the two norms (0 vectors: 90°)."""
    cos = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    return np.arccos(np.clip(cos, -1.0, 1.0))
