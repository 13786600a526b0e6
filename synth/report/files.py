"""The other JSON files synth writes beside a dataset: ``relabel``'s ``report.json`` and ``fn_probe.json``.
Each is validated when written (``RelabelReport.model_validate`` in ``synth.pipeline.relabel._finish``,
``FnProbeResult.model_validate`` in ``synth.evaluate.fn_probe.run_fn_probe``) and parsed by its readers
(the CLI's summary lines, ``synth compare``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from synth.report.generation import LLMUsage
from synth.report.judging import Fixed, JudgeStage, PolicyCounts, Verdicts
from synth.report.run import Environment, IndexInfo, MiningStats, StageTiming


class RelabelStage(JudgeStage):
    """One cascade stage of a relabel run, with the names the relabel report adds."""

    in_: int = Field(alias="in")
    decided: int
    failures: int


class RelabelCascade(Fixed):
    final: Verdicts
    stages: list[RelabelStage]


class RelabelInput(Fixed):
    """The dataset relabelled (``synth.formats.base`` summary) and the fingerprint ``--reapply`` checks."""

    source: Any
    kind: str
    layout: Any
    n: Any
    queries: int
    rows: int
    positives: int
    negatives: int
    dropped: dict[str, int]
    path: str
    fingerprint: str
    candidates: int


class RelabelReport(Fixed):
    """``report.json`` of ``synth relabel`` (and of ``--reapply``, which adds ``reapplied_from`` and keeps the
    judged run's LLM usage as ``llm_when_judged``)."""

    command: Literal["relabel"]
    seed: Optional[int]
    reapplied_from: Optional[str] = None
    input: RelabelInput
    judges: dict[str, Any] = Field(description="the cascade file: path, name, content, resolved")
    cascade: RelabelCascade
    policy: PolicyCounts
    bi_scores: Optional[dict[str, Any]]
    llm: LLMUsage
    llm_when_judged: Optional[LLMUsage] = None
    output: dict[str, Any] = Field(description="what was written: format, rows, columns and per-layout counts")
    state: dict[str, Any]
    stages: dict[str, dict[str, float]] = Field(description="step -> {seconds}")
    environment: Environment
    started_at: str
    seconds: float


class PerPair(Fixed):
    negatives: int
    false_negatives: int
    fn_rate: Optional[float]
    mean_rank: Optional[float]
    median_rank: Optional[float]
    pairs_short: int


class FnProbeResult(Fixed):
    """``fn_probe.json`` (``synth fn-probe``): the share of published negatives that are hidden positives,
    their ranks, and the same figures for plain top-n (``topk_*``) and for the hardness limit (``oracle_*``)."""

    n: int
    probed_queries: int
    pairs: int
    negatives: int
    false_negatives: int
    fn_rate: Optional[float]
    mean_rank: Optional[float]
    median_rank: Optional[float]
    queries_short: int
    queries_with_fn: int
    labelled_as_negative: int
    per_pair: PerPair
    oracle_mean_rank: Optional[float]
    oracle_fn_rate: Optional[float]
    topk_fn_rate: Optional[float]
    topk_mean_rank: Optional[float]
    fn_vs_topk: Optional[float]
    rank_vs_oracle: Optional[float]
    judged: Optional[dict[str, Any]] = Field(None, description="the pool before judging and mixing, and their counts")
    judges: Optional[dict[str, Any]] = Field(None, description="per judge stage: AUC, precision, recall")
    method: str
    sampler: dict[str, Any]
    filters: list[dict[str, Any]]
    positive_anchor: Any
    hide_fraction: float
    probe_seed: int
    seed: int
    hidden_positives: int
    visible_positives: int
    corpus: int
    score_space: str
    index: IndexInfo
    mining: MiningStats
    stages: dict[str, StageTiming]
    notices: list[str]
    recipe: str
