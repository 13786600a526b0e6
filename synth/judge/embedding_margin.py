"""The free first stage: the bi-encoder margin s(q, d-) - s(q, d+) that mining already computed.

Needs both scores on the ``Candidate`` (mining has them); a candidate without them cannot be judged
here and escalates as ``uncertain`` with ``failed=True`` (re-embedding is deliberately not done here:
the scores must come from the same model and normalisation the miner used).
"""

from __future__ import annotations

import math
from typing import Sequence

from synth.judge import fingerprint_of, threshold_verdict
from synth.judge.base import Candidate, StageVerdict
from synth.judge.config import EmbeddingMarginStage


class EmbeddingMarginJudge:
    kind = "embedding_margin"

    def __init__(self, cfg: EmbeddingMarginStage, **_context):
        self.cfg = cfg
        self.name = cfg.name or cfg.kind

    def fingerprint(self) -> str:
        c = self.cfg
        return fingerprint_of(
            kind=self.kind, lo=c.negative_below, hi=c.false_negative_at_or_above, decides=sorted(c.decides)
        )

    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        out = []
        for c in candidates:
            if math.isnan(c.bi_score) or math.isnan(c.positive_bi_score):
                out.append(StageVerdict("uncertain", detail="no bi-encoder scores on the candidate", failed=True))
                continue
            score = float(c.bi_score - c.positive_bi_score)
            verdict, detail = threshold_verdict(score, self.cfg)
            out.append(StageVerdict(verdict, score, "bi-encoder", detail=detail))
        return out
