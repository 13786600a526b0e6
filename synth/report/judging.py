"""The ``judging`` section of ``report.json``: the judge cascade, its verdicts per stage, the learned judge's
fit (``fn_risk``), the policy counts and the trained cross-encoder. Part of ``synth.report.run.RunReport``.

Producers (the dicts these models validate): ``synth.judge.run.CascadeRunner.report`` (cascade, candidates,
final, stages, store), ``synth.judge.cascade.StageStats.to_dict`` (one stage), ``synth.judge.fn_risk``
``FnRiskJudge._ensure_fit`` / ``_learn`` (``model_report``), ``synth.judge.policies.apply_policy`` (policy).
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import Field

from synth.core.strict import Section as Fixed  # a section with fixed keys: an unknown key is an error


class CascadeInfo(Fixed):
    path: Optional[str] = Field(description="the recipe's judge.cascade as written (a file or a built-in name)")
    name: str
    resolved: dict[str, Any] = Field(description="the cascade as run (its schema: `synth schema --cascade`)")


class Candidates(Fixed):
    mined: int
    synthetic: int
    unique: int = Field(description="distinct (query_id, doc_id) judged")


class Verdicts(Fixed):
    """Final verdicts per unique (query_id, doc_id), as the ``verdicts`` config holds them."""

    negative: int
    false_negative: int
    uncertain: int


class Calibration(Fixed):
    predicted: float
    observed: float
    candidates: int


class Heldout(Fixed):
    """The learned judge's cross-fitted predictions on held-out queries."""

    candidates: int
    hidden_positives: int
    auc: Optional[float]
    calibration: list[Calibration]
    ece: Optional[float]


class Estimate(Fixed):
    """The held-out replay at the chosen cut-off (``synth.judge.operating_point.choose_cutoff``)."""

    cutoff: Optional[float]
    replicates: int
    queries: int
    kept: int
    fn_rate: Optional[float]
    topn_fn_rate: Optional[float]
    mean_rank: Optional[float]
    oracle_mean_rank: Optional[float]
    rank_vs_oracle: Optional[float]
    flagged_share: Optional[float]
    replicates_short: int
    fn_rate_smoothed: Optional[float]
    fn_ratio: Optional[float]
    fn_ratio_interval: Optional[list[float]]
    reachable: bool


class RiskModelReport(Fixed):
    """What a learned judge (``fn_risk``) learned, or why it fell back. The keys after ``min_hidden`` appear
    as far as the fit got: a source without enough hidden positives stops before ``heldout``."""

    features: list[str]
    training_queries: int
    folds: int
    depth: int
    replay_depth: int
    target_fn_ratio: float
    n_select: int
    min_hidden: int
    training_replicates: Optional[int] = None
    training_candidates: Optional[int] = None
    hidden_positives: Optional[int] = None
    heldout: Optional[Heldout] = None
    threshold: Optional[float] = None
    target_used: Optional[float] = None
    estimate: Optional[Estimate] = None
    coefficients: Optional[dict[str, float]] = None
    mode: str = Field(description="'learned' or 'fallback'")
    fitted: bool
    why: Optional[str] = Field(description="why it fell back, or what was loosened ('' when nothing)")
    fallback: Optional[dict[str, Any]] = Field(None, description="the fallback judge's config, when it fell back")
    summary: str
    notices: list[str]
    fit_seconds: float


class JudgeStage(Fixed):
    """One cascade stage (``synth.judge.cascade.StageStats``), with a learned judge's ``model_report``."""

    stage: str
    kind: str
    fingerprint: str
    candidates: int
    reused: int
    judged: int
    negative: int
    false_negative: int
    uncertain: int
    failed: int
    seconds: float
    model_report: Optional[RiskModelReport] = None


# The policy's counts are named by what it saw (``verdict_<label>``, ``negatives_relabelled`` ...) and are
# rendered in the order ``apply_policy`` writes them, so they stay a mapping: name -> count (policy: name).
PolicyCounts = dict[str, Union[int, str, None]]


class Judging(Fixed):
    """The judge cascade's verdicts and the policy applied to them."""

    cascade: CascadeInfo
    candidates: Candidates
    final: Verdicts
    stages: list[JudgeStage]
    store: str = Field(description="the verdict store (a path under the cache)")
    policy: PolicyCounts = Field(description="apply_policy's counts: policy, cap, examples_*, negatives_*, verdict_*")
    cross_encoder: Optional[dict[str, Any]] = Field(
        description="the cross-encoder trained for this cascade (synth.judge.train), null when none was trained"
    )
