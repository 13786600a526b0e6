"""Positive-aware filters that combine with any sampler.

Each filter turns the anchor positive score s⁺ (the min or max over the query's labelled positives,
``mine.positive_anchor``) into an upper bound on a negative's score; a candidate survives when its
score is at most every bound. Filters run before the sampler sees the pool. A new filter is one
class here and one line in ``REGISTRY``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from synth.core.registry import config_union
from synth.core.strict import StrictModel


class _Filter(StrictModel):
    def threshold(self, anchor: np.ndarray) -> np.ndarray:  # pragma: no cover - protocol
        raise NotImplementedError


class PercFilter(_Filter):
    """s⁻ ≤ p·s⁺ (NV-Retriever's TopK-PercPos), written as s⁺ − (1−p)·|s⁺| so that it stays a
    *lower* bound than s⁺ when s⁺ < 0 (p·s⁺ would then lie above s⁺)."""

    kind: Literal["perc"] = "perc"
    p: float = Field(0.95, gt=0.0, le=1.0)

    def threshold(self, anchor: np.ndarray) -> np.ndarray:
        return anchor - (1.0 - self.p) * np.abs(anchor)


class MarginFilter(_Filter):
    """s⁻ ≤ s⁺ − m (NV-Retriever's TopK-MarginPos)."""

    kind: Literal["margin"] = "margin"
    m: float = Field(0.05, ge=0.0)

    def threshold(self, anchor: np.ndarray) -> np.ndarray:
        return anchor - self.m


class AbsFilter(_Filter):
    """s⁻ ≤ τ (NV-Retriever's TopK-Abs)."""

    kind: Literal["abs"] = "abs"
    tau: float = 0.9

    def threshold(self, anchor: np.ndarray) -> np.ndarray:
        return np.full_like(anchor, self.tau)


# kind -> (config model, implementation): a filter is its own implementation (``threshold``).
REGISTRY: dict[str, tuple[type, type]] = {
    "perc": (PercFilter, PercFilter),
    "margin": (MarginFilter, MarginFilter),
    "abs": (AbsFilter, AbsFilter),
}
FilterConfig = config_union(REGISTRY)


def keep_mask(filters: list, scores: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Boolean mask, same shape as ``scores`` [B, K], of candidates that pass every filter."""
    keep = np.ones(scores.shape, dtype=bool)
    for f in filters:
        keep &= scores <= f.threshold(anchor.astype(np.float32))[:, None]
    return keep
