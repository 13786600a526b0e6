"""Judges of mined and synthetic negatives: cascades of judge kinds that call each candidate a
negative, a false negative or uncertain, the verdict store, and the policies applied afterwards.

``make_judge(stage, ...)`` builds the judge a cascade stage names. Each kind lives in its own module,
imported only when a cascade uses it (the LLM and cross-encoder kinds pull in heavy dependencies).
A new judge kind is one module (a class taking ``(cfg, **context)``), its stage config in ``config.py``
and one line in ``config.REGISTRY``.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Callable

from synth.core.registry import build
from synth.judge.base import Candidate, Judge, JudgeContext, Judgement, StageVerdict, Verdict
from synth.judge.config import REGISTRY

if TYPE_CHECKING:
    from synth.judge.config import StageConfig
    from synth.llm.client import LLMClient
    from synth.llm.config import BackendConfig
    from synth.llm.prompts import PromptLibrary

__all__ = [
    "Candidate",
    "Judge",
    "JudgeContext",
    "Judgement",
    "StageVerdict",
    "Verdict",
    "make_judge",
    "threshold_verdict",
    "restrict",
    "fingerprint_of",
    "KINDS",
]

KINDS = tuple(REGISTRY)


def make_judge(
    stage: "StageConfig",
    *,
    llm_client: "Callable[[BackendConfig | None], LLMClient] | None" = None,
    prompts: "PromptLibrary | None" = None,
    seed: int = 0,
    context: JudgeContext | None = None,
) -> Judge:
    """The judge for one cascade stage. ``llm_client(stage.llm)`` gives the LLM stages their client
    (``None`` = the command's default LLM); it is only called for LLM kinds. ``context`` is the run's
    data for kinds that learn from it (``fn_risk``)."""
    if stage.kind not in REGISTRY:  # config validation makes this unreachable for files; kept for programmatic use
        raise ValueError(f"unknown judge kind {stage.kind!r} (known: {', '.join(REGISTRY)})")
    if prompts is None:
        from synth.llm.prompts import PromptLibrary

        prompts = PromptLibrary()
    return build(REGISTRY, stage, llm_client=llm_client, prompts=prompts, seed=seed, context=context)


def restrict(verdict: Verdict, decides: list[str], detail: str = "") -> tuple[Verdict, str]:
    """A verdict the stage is not allowed to give (``decides``) escalates as uncertain."""
    if verdict != "uncertain" and verdict not in decides:
        return "uncertain", (detail + "; " if detail else "") + f"{verdict} not in decides"
    return verdict, detail


def threshold_verdict(score: float, cfg) -> tuple[Verdict, str]:
    """Score -> verdict with the config's semantics: < negative_below -> negative,
    >= false_negative_at_or_above -> false_negative, otherwise (or NaN) uncertain."""
    lo, hi = cfg.negative_below, cfg.false_negative_at_or_above
    if score is None or math.isnan(score):
        return "uncertain", "no score"
    if hi is not None and score >= hi:
        return restrict("false_negative", cfg.decides, f"score {score:.4f} >= {hi:g}")
    if lo is not None and score < lo:
        return restrict("negative", cfg.decides, f"score {score:.4f} < {lo:g}")
    return "uncertain", f"score {score:.4f} between thresholds"


def fingerprint_of(**parts) -> str:
    """A short stable hash of a judge's decision-relevant settings (never the stage name: renaming a
    stage must not throw away its verdicts)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]
