"""The LLM sections of ``report.json``: personas, synthetic queries and negatives, and the LLM accounting.
Part of ``synth.report.run.RunReport``.

Producers (the dicts these models validate): ``synth.generate.personas.load_personas`` (``Personas``),
``synth.generate.queries`` / ``quality`` / ``negatives`` and ``synth.generate.stages`` (the synthetic
sections), ``synth.llm.accounting.Accounting.report`` (``LLMUsage``).
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field

from synth.report.judging import Fixed as _Fixed


class Generation(_Fixed):
    """LLM requests of one generation step and how many were answered (failure kind -> count)."""

    requests: int
    answered: int
    failed: int
    failures: dict[str, int]


class PersonaGeneration(Generation):
    duplicates: int


class QueryGeneration(Generation):
    docs: int
    personas: int
    by_type: dict[str, int]


class NegativeGeneration(Generation):
    passages: int
    empty_passages: int


class Stratum(_Fixed):
    available: int
    chosen: int


class Personas(_Fixed):
    """The personas that steered query generation (``synth.generate.personas.load_personas``)."""

    source: str
    path: Optional[str]
    license: Optional[str]
    available: int
    requested: int
    chosen: int
    stratify_by: Optional[str]
    strata: dict[str, Stratum]
    origin: dict[str, int]
    repeated_texts_skipped: int
    generation: Optional[PersonaGeneration] = None


class QualityJudge(_Fixed):
    """The LLM that kept or dropped each generated query (``synth.generate.quality.judge_queries``)."""

    model: str
    prompt: str
    prompt_sha256: str
    requests: int
    verdicts: dict[str, int]


class SyntheticQueries(_Fixed):
    """Synthetic query generation and the filters that kept or dropped each query (filter -> dropped)."""

    generation: QueryGeneration
    quality_judge: Optional[QualityJudge] = None
    candidates: int
    kept: int
    dropped: dict[str, int]
    kept_by_type: Optional[dict[str, int]] = None
    max_kept_per_document: Optional[int] = None


class SyntheticNegatives(_Fixed):
    """Synthetic negative generation and its filters (filter -> dropped)."""

    pairs: int
    generation: NegativeGeneration
    generated: int
    kept: int
    dropped: dict[str, int]


class Usage(_Fixed):
    """LLM requests, tokens and cost (null: a model without a price sent requests)."""

    requests_sent: int
    cache_hits: int
    tokens_in: int
    tokens_out: int
    failed: int
    attempts: int
    failures: dict[str, int]
    cost_usd: Optional[float]


class StageUsage(Usage):
    models: dict[str, Usage] = Field(description="model as served -> its usage")


class LLMUsage(Usage):
    """LLM accounting (``synth.llm.accounting.Accounting.report``): totals, per stage and model, budget."""

    totals: Usage
    stages: dict[str, StageUsage] = Field(description="stage -> usage")
    budget: Optional[dict[str, Any]] = Field(description="the recipe's budget: section")
    prices: dict[str, dict[str, Any]] = Field(description="model -> the recipe's price")
