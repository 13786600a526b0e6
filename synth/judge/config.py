"""Cascade definitions (``judges/*.yaml``): pydantic models with ``extra="forbid"``.

A cascade is an ordered list of stages. A candidate stops at the first stage that decides; only
``uncertain`` escalates; the last stage is authoritative, and what is still uncertain after it is
treated as a suspected false negative by every policy that could otherwise keep it (fail closed).

Scores are oriented so that **higher means more likely relevant** (more likely a false negative):
- ``embedding_margin``: s(q, d-) - s(q, d+) with the bi-encoder;
- ``cross_encoder``: CE(q, d-) - CE(q, d+) (the candidate against the query's positive);
- ``llm_pointwise`` / ``llm_listwise``: the model's verdict (score 1.0 relevant, 0.0 not);
- ``fn_risk``: the learned probability that the candidate is an unlabelled positive (its cut-off
  comes from ``target_fn_ratio`` on a replay of the run's selection, not from ``negative_below``).
A stage decides ``negative`` when score < ``negative_below`` and ``false_negative`` when
score >= ``false_negative_at_or_above``; between the two (or when a bound is unset) it is uncertain.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from synth.core.files import from_folder
from synth.core.registry import config_union
from synth.llm.config import BackendConfig
from synth.samplers.filters import FilterConfig, PercFilter
from synth.core.strict import StrictModel
from synth.core.yamlio import load_mapping, validate


class _Stage(StrictModel):
    name: str = Field("", description="stage name in verdicts and reports (default: the kind)")
    decides: list[Literal["negative", "false_negative"]] = Field(
        default_factory=lambda: ["negative", "false_negative"],
        description="verdicts this stage may give; anything else it finds escalates as uncertain",
    )


class _Thresholds(_Stage):
    negative_below: float | None = Field(None, description="score < this -> negative")
    false_negative_at_or_above: float | None = Field(None, description="score >= this -> false_negative")

    @model_validator(mode="after")
    def _ordered(self):
        lo, hi = self.negative_below, self.false_negative_at_or_above
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("negative_below must be <= false_negative_at_or_above")
        return self


class EmbeddingMarginStage(_Thresholds):
    kind: Literal["embedding_margin"] = "embedding_margin"


class CrossEncoderStage(_Thresholds):
    kind: Literal["cross_encoder"] = "cross_encoder"
    model: str = Field(
        description="a CrossEncoder folder (relative to the cascade file) or a model name on disk; "
        "`synth train-judge` makes one offline"
    )
    batch_size: int = Field(64, gt=0)
    max_length: int = Field(256, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class _LLMStage(_Stage):
    prompt: str = Field(description="prompt name in prompts/ (schema beside it)")
    llm: BackendConfig | None = Field(None, description="this stage's LLM; default: the one given to the command")
    max_tokens: int = Field(256, gt=0)
    max_doc_chars: int = Field(1500, gt=0, description="passages are cut to this before fencing")


class LLMPointwiseStage(_LLMStage):
    kind: Literal["llm_pointwise"] = "llm_pointwise"
    prompt: str = "judge_pointwise"


class LLMListwiseStage(_LLMStage):
    kind: Literal["llm_listwise"] = "llm_listwise"
    prompt: str = "judge_listwise"
    max_candidates: int = Field(20, gt=0, description="candidates per prompt; more are split over several prompts")


class FNRiskStage(_Stage):
    """A false-negative risk model learned from the source's own labelled positives (``synth.judge.fn_risk``).
    Its score is the cross-fitted probability that a candidate is an unlabelled positive; its cut-off is not
    a constant but comes from ``target_fn_ratio`` on a held-out replay of the run's selection. When the
    source cannot support that (too few hidden positives), it falls back to ``fallback`` and says so."""

    kind: Literal["fn_risk"] = "fn_risk"
    target_fn_ratio: float = Field(
        0.1,
        gt=0.0,
        le=1.0,
        description="the kept negatives may hold at most this share of the false negatives the plain "
        "top-n holds (estimated by replaying the run's selection, backfill included, on held-out folds). "
        "A ratio means the same on every collection; 1 flags nothing",
    )
    folds: int = Field(
        5,
        ge=2,
        le=20,
        description="cross-fitting folds (by query): no query is scored by a model that saw its positives",
    )
    depth: int = Field(
        100, gt=0, le=10_000, description="dense ranks per query the model learns from and ranks candidates against"
    )
    hide_groups: int = Field(
        16,
        ge=2,
        le=1_000,
        description="a query's labelled positives are hidden in this many groups at most, one group per "
        "training replicate (every positive is hidden once; up to this many, one at a time)",
    )
    min_hidden: int | None = Field(
        None,
        ge=1,
        description="hidden positives among the training candidates needed to learn; default 5 per feature "
        "(events per variable of a logistic regression, Vittinghoff & McCulloch 2007); with fewer the stage "
        "falls back",
    )
    max_train_queries: int = Field(20_000, gt=0, description="training queries at most (a seeded subsample beyond)")
    near_copy_jaccard: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="a candidate whose term set overlaps a "
        "labelled positive's at least this much (Jaccard) is flagged whatever the model says",
    )
    regularization: float = Field(1.0, gt=0.0, description="inverse L2 strength C of the logistic regression")
    escalate_below: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="a flagged candidate whose risk is below "
        "this goes to the next stage as uncertain instead of being called a false "
        "negative (e.g. 0.5: an LLM judges the flags the model is less than 50 % sure of)",
    )
    fallback: FilterConfig = Field(
        default_factory=lambda: PercFilter(p=0.95),
        description="when the source cannot support the model (too few hidden positives, e.g. one positive per "
        "query), flag a candidate whose dense score the positive-aware filter would reject: by default "
        "NV-Retriever's TopK-PercPos, score > 0.95 x the query's lowest labelled positive score",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict):
            for old, new in (("target_fn_rate", "target_fn_ratio"), ("hide_fraction", "hide_groups")):
                if old in data:
                    raise ValueError(
                        f"{old} was replaced by {new}: "
                        + (
                            "the target is now a share of the plain top-n's false negatives, e.g. 0.1"
                            if old == "target_fn_rate"
                            else "every labelled positive is hidden once, in at most hide_groups groups"
                        )
                    )
        return data


# kind -> (stage config, "module:Class" of its judge, imported only when a cascade uses it: the LLM and
# cross-encoder kinds pull in heavy dependencies). The class is built as
# Class(cfg, llm_client=..., prompts=..., seed=..., context=...).
REGISTRY: dict[str, tuple[type, str]] = {
    "embedding_margin": (EmbeddingMarginStage, "synth.judge.embedding_margin:EmbeddingMarginJudge"),
    "cross_encoder": (CrossEncoderStage, "synth.judge.cross_encoder:CrossEncoderJudge"),
    "llm_pointwise": (LLMPointwiseStage, "synth.judge.llm_pointwise:LLMPointwiseJudge"),
    "llm_listwise": (LLMListwiseStage, "synth.judge.llm_listwise:LLMListwiseJudge"),
    "fn_risk": (FNRiskStage, "synth.judge.fn_risk:FNRiskJudge"),
}
StageConfig = config_union(REGISTRY)


class Cascade(StrictModel):
    name: str
    description: str = ""
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self):
        seen = set()
        for s in self.stages:
            s.name = s.name or s.kind
            if s.name in seen:
                raise ValueError(f"stages: two stages named {s.name!r}; give them distinct `name`s")
            seen.add(s.name)
        return self


def load_cascade(path: str | Path) -> Cascade:
    """Read and validate a cascade file; model paths become absolute. Raises ``UserError`` with one line."""
    path = Path(path)
    cascade = validate(Cascade, load_mapping(path, "judges"), str(path))
    for stage in cascade.stages:
        if isinstance(stage, CrossEncoderStage):
            local = from_folder(
                os.path.dirname(os.path.abspath(path)), stage.model
            )  # a folder beside the file (else a model name: left as is)
            if local.exists():
                stage.model = str(local)
    return cascade
