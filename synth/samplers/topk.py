"""``topk``: the highest-scoring candidates inside a window of raw ranks.

``range_min`` / ``range_max`` count *raw* ranks of the query's dense ranking, labelled positives
included: ``range_min: 10`` skips the 10 most similar documents whatever they are. In
sentence-transformers' ``mine_hard_negatives``, ``range_min`` counts *survivors*: positives and
filtered candidates are removed first, then the first ``range_min`` of what is left is skipped.
On a query with 3 positives in its top 10, ``range_min: 10`` therefore skips 10 documents here and
13 there.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from synth.core.seeding import gumbel_top, uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks, picks_from_columns
from synth.core.strict import StrictModel


class TopKConfig(StrictModel):
    kind: Literal["topk"] = "topk"
    range_min: int = Field(0, ge=0, description="first raw rank allowed (0 = the most similar document)")
    range_max: int = Field(100, gt=0, description="raw ranks at or past this are not candidates")
    pick: Literal["top", "random"] = Field("top", description="take the best n in the window, or n uniformly")

    @model_validator(mode="after")
    def _window(self) -> "TopKConfig":
        if self.range_min >= self.range_max:
            raise ValueError(f"range_min ({self.range_min}) must be below range_max ({self.range_max})")
        return self


class TopKSampler:
    kind: ClassVar[str] = "topk"

    def __init__(self, config: TopKConfig):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return min(self.config.range_max, corpus_size)

    @property
    def backfill_start_rank(self) -> int:
        """Backfill (``synth.select.backfill``) never goes above the window: skipped top ranks stay skipped."""
        return self.config.range_min

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        lo = self.config.range_min
        window = block.cand_scores[:, lo : self.config.range_max]
        if self.config.pick == "top":
            # Rank order breaks the tie: the earlier column (the higher score) wins.
            keys = np.where(np.isfinite(window), -np.arange(window.shape[1], dtype=np.float64)[None, :], -np.inf)
            cols = _top_columns(keys, n)
        else:
            log_w = np.where(np.isfinite(window), 0.0, -np.inf)
            u = uniforms(ctx.seed, block.pair_keys, "topk", window.shape[1])
            cols = gumbel_top(log_w, u, n)
        cols = np.where(cols >= 0, cols + lo, -1)
        return picks_from_columns(block, cols)


def _top_columns(keys: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best columns per row by ``keys`` (-inf = not allowed); -1 where short."""
    n_eff = min(n, keys.shape[1])
    cols = np.argsort(-keys, axis=1, kind="stable")[:, :n_eff].astype(np.int64)
    cols[~np.isfinite(np.take_along_axis(keys, cols, axis=1))] = -1
    if n_eff < n:
        cols = np.concatenate([cols, np.full((cols.shape[0], n - n_eff), -1, dtype=np.int64)], axis=1)
    return cols
