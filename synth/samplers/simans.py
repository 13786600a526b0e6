"""``simans``: SimANS, sampling ambiguous negatives (Zhou et al., EMNLP 2022).

From the top ``depth`` raw dense ranks, ``n`` candidates are drawn without replacement with

    p(d⁻) ∝ exp(−a · (c·s(q,d⁻) − c·s(q,d⁺) − b)²)

where s(q,d⁺) is the score of this pair's own positive (``block.positive_score``) and c is
``score_scale``. The kernel peaks at s⁻ = s⁺ + b/c (with the default b = 0, at s⁻ = s⁺): negatives
about as similar to the query as the positive are the "ambiguous" ones the paper favours.

Sign of b: the paper writes the kernel as exp(−a(s(q,d⁻) − s(q,d⁺) − b)²); the official code
computes exp(−a(s⁻ − s⁺ + b)²), i.e. with the sign of b flipped. We follow the paper's formula.
With the default b = 0 the two agree.

``score_scale``: the paper's constants (a, b) were tuned on raw BERT inner products, which are
roughly 30x larger than cosine scores. On cosine scores in [-1, 1] the kernel with a = 0.5 is nearly
flat (exp(−0.5·0.3²) ≈ 0.96), so SimANS degenerates to uniform sampling over the pool. Setting
``score_scale`` (e.g. 30) rescales the scores before the kernel to recover the paper's sharpness.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.core.seeding import gumbel_top, uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks, picks_from_columns
from synth.core.strict import StrictModel


class SimANSConfig(StrictModel):
    kind: Literal["simans"] = "simans"
    depth: int = Field(100, gt=0, description="raw dense ranks sampled from (positives included in the count)")
    a: float = Field(0.5, ge=0.0, description="kernel sharpness: p ∝ exp(−a·(c·s⁻ − c·s⁺ − b)²)")
    b: float = Field(0.0, description="kernel offset, in scaled units: the kernel peaks at c·s⁻ = c·s⁺ + b")
    score_scale: float = Field(
        1.0, gt=0.0, description="c: scores are multiplied by it before the kernel (~30 maps cosine to BERT-IP range)"
    )


def kernel_log_weights(scores: np.ndarray, anchor: np.ndarray, a: float, b: float, scale: float) -> np.ndarray:
    """log of exp(−a·(scale·s − scale·s⁺ − b)²) per candidate; -inf where the score is -inf
    (excluded), so that a = 0 never turns an excluded candidate into 0·inf = NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    gap = scale * (np.where(finite, scores, 0.0) - np.asarray(anchor, dtype=np.float64)[:, None]) - b
    return np.where(finite, -a * gap * gap, -np.inf)


class SimANSSampler:
    kind: ClassVar[str] = "simans"

    def __init__(self, config: SimANSConfig):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return min(self.config.depth, corpus_size)

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        c = self.config
        pool = block.cand_scores[:, : c.depth]
        log_w = kernel_log_weights(pool, block.positive_score, c.a, c.b, c.score_scale)
        u = uniforms(ctx.seed, block.pair_keys, "simans", pool.shape[1])
        return picks_from_columns(block, gumbel_top(log_w, u, n))
