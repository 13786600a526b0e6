"""The typed run report: ``report.json`` of ``synth run`` as a pydantic model with a JSON schema.

``RunReport`` names every top-level key a run writes; a key the run writes that is not declared here,
or a required one it forgot, fails ``check_report`` (called by ``synth.pipeline.run.finish`` before the
file is written), so the schema cannot drift from the file. Every section forbids unknown keys; keys a
section has only for some recipes are Optional. Mappings whose keys are data (config names, filter names,
strata, stage names) are typed ``dict[str, ...]``. ``synth schema --report`` prints the schema.

Readers (the card, report.html, ``synth compare``, the CLI) parse the file once with
``RunReport.model_validate_json`` and read attributes, so a renamed key fails where it is read.

A new report section is one field here and its model, in the order the run writes it. Where the producer
keeps stats as it works, its stats class IS the section's model (declared once, ``synth.core.strict.Section``):
``MineStats`` (synth.mine) as ``mining``, ``EmbedStats`` (synth.embed) as ``embedding``, ``SearchInfo``
(synth.index) as ``index``, ``MixStats`` (synth.select.mix) as ``mix``. Other producers:
``EngineStats`` (synth.engine.base) -> ``Engine``, ``Selected.report`` (synth.select.selection) ->
``Selection``, ``check_pairs`` / ``not_checked`` (synth.leakage) -> ``LeakageChecked`` / ``LeakageNotChecked``,
``Accounting.report`` (synth.llm.accounting) -> ``LLMUsage``, the generation stats (synth.generate) ->
``Personas`` / ``SyntheticQueries`` / ``SyntheticNegatives``, the judges -> ``synth.report.judging.Judging``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, ValidationError

from synth.core.strict import Section as _Fixed
from synth.embed import EmbedStats as Embedding
from synth.index import SearchInfo as IndexInfo
from synth.mine import MineStats as MiningStats
from synth.report.generation import LLMUsage, Personas, SyntheticNegatives, SyntheticQueries
from synth.report.judging import Judging
from synth.select.mix import MixStats as Mix


class InputFindings(_Fixed):
    """What the source loader noticed in the input (skipped lines, empty texts, ...)."""

    counts: dict[str, int]
    examples: dict[str, Any]


class ScoreStats(_Fixed):
    """``{count, mean, min, p5, median, p95, max}``; ``{count: 0}`` when there is nothing to describe."""

    count: int
    mean: Optional[float] = None
    min: Optional[float] = None
    p5: Optional[float] = None
    median: Optional[float] = None
    p95: Optional[float] = None
    max: Optional[float] = None


STAT_KEYS = ("count", "mean", "min", "p5", "median", "p95", "max")


class Scores(_Fixed):
    """Score statistics in the index's score space."""

    space: str
    negative: ScoreStats
    positive: ScoreStats
    positive_minus_negative: ScoreStats


class Selection(_Fixed):
    """The selection rounds (judge, policy, backfill) that filled each pair's negatives."""

    target: dict[str, int]
    rounds: int
    pairs: int
    pairs_full: int
    pairs_short: int
    short_reasons: dict[str, int]
    pairs_dropped_by_policy: int
    pairs_backfilled: int
    backfilled_candidates: int
    backfill_depth_searched: Optional[int]


class LeakageNotChecked(_Fixed):
    """No evaluation split to check against (``synth.leakage.not_checked``)."""

    checked: Literal[False]
    reason: str


class Overlaps(_Fixed):
    """Training pairs that share each kind of thing with the evaluation split."""

    query_id: int
    query_text: int
    positive: int
    negative: int


class OriginOverlaps(Overlaps):
    pairs: int
    overlapping: int


class LeakageChecked(_Fixed):
    """Overlap of the training pairs with an evaluation split (``synth.leakage.check_pairs``)."""

    checked: Literal[True]
    folder: str
    split: str
    eval_queries: int
    eval_documents: int
    pairs_checked: int
    pairs_overlapping: int
    by_kind: Overlaps
    by_origin: dict[str, OriginOverlaps] = Field(description="query origin (real, synthetic) -> overlaps")
    drop: bool
    pairs_dropped: int


# Tagged by `checked`, so a bad key is reported inside the variant the run wrote, not once per variant.
Leakage = Annotated[
    Union[Annotated[LeakageNotChecked, Tag("checked=false")], Annotated[LeakageChecked, Tag("checked=true")]],
    Discriminator(lambda v: f"checked={str(v.get('checked') if isinstance(v, dict) else v.checked).lower()}"),
]


class TevatronFiles(_Fixed):
    path: str
    format: str
    rows: int
    positives: int
    negatives: int


class BeirFiles(_Fixed):
    path: str
    corpus: int
    queries: int
    qrels: int


class OutputFiles(_Fixed):
    """Extra files written beside dataset/ (``output.files``)."""

    tevatron: Optional[TevatronFiles] = None
    beir: Optional[BeirFiles] = None


class Output(_Fixed):
    """The written dataset: its format, row counts, columns and configs."""

    format: str
    rows: int
    pairs: int
    short_pairs_dropped: int
    negatives: int
    train_columns: list[str]
    columns: list[str]
    provenance_columns: list[str]
    configs: dict[str, int] = Field(description="config name -> rows")
    files: OutputFiles


class Licenses(_Fixed):
    """Role -> licence of everything the output is made from."""

    corpus: str
    personas: Optional[str] = None
    llm: Optional[str] = None
    embedder: str


class StageTiming(_Fixed):
    """One pipeline stage: rows it produced and its wall time (``load`` adds corpus and query counts)."""

    rows: int
    seconds: float
    corpus: Optional[int] = None
    queries: Optional[int] = None


class EngineCluster(_Fixed):
    """The Ray cluster the run used (the local engine: this machine)."""

    nodes: int
    cpus: float
    gpus: float


class EngineWork(_Fixed):
    """One kind of work the engine ran (``embed``, ``search``, ``llm``...): items, distinct worker processes,
    and the wall seconds the driver waited on them."""

    tasks: int
    workers: int
    seconds: float


class Engine(_Fixed):
    """Where the run's work ran (``synth.engine``): ``local`` or ``ray``."""

    kind: str
    address: Optional[str] = Field(description="the Ray address as set (no credentials); null for local")
    workers: int = Field(description="distinct worker processes that ran tasks")
    cluster: EngineCluster
    start_seconds: float = Field(description="seconds to start or join the cluster (not in any stage)")
    stages: dict[str, EngineWork] = Field(description="work label -> what the engine ran")
    stage_seconds: dict[str, float] = Field(description="pipeline stage -> wall seconds, as in `stages`")


class Environment(_Fixed):
    """Versions of synth, Python and the libraries that shape the output."""

    synth: str
    python: str
    platform: str
    cpu_count: Optional[int]
    torch: Optional[str]
    faiss: Optional[str]
    sentence_transformers: Optional[str]
    openai: Optional[str]
    xllamacpp: Optional[str]
    vllm: Optional[str]


class RunReport(_Fixed):
    """``report.json`` of ``synth run``. Sections a run does not have (no mining for ``format: pairs``,
    no judging without ``judge:``, no synthetic data without an LLM) are absent, not null."""

    recipe: dict[str, Any] = Field(
        description="the resolved recipe (its schema: `synth schema`), local paths rewritten by synth.publish.paths"
    )
    seed: int
    input_findings: InputFindings
    clamps: Optional[dict[str, Any]] = Field(
        None, description="recipe values the corpus size clamped: {key: {set, used}}"
    )
    index: Optional[IndexInfo] = None
    mining: Optional[MiningStats] = None
    scores: Optional[Scores] = None
    judging: Optional[Judging] = None
    mix: Optional[Mix] = None
    selection: Optional[Selection] = None
    leakage: Leakage
    output: Output
    embedding: Optional[Embedding] = None
    personas: Optional[Personas] = None
    synthetic_queries: Optional[SyntheticQueries] = None
    synthetic_negatives: Optional[SyntheticNegatives] = None
    llm: LLMUsage
    licenses: Licenses
    notices: list[str] = Field(
        default_factory=list,
        description="one line each, what the run must not keep quiet: a learned judge that fell back or cannot "
        "meet its target, judges that flagged nearly every candidate, pairs left short of negatives",
    )
    stages: dict[str, StageTiming] = Field(description="stage name -> timing, in run order")
    engine: Engine
    environment: Environment
    started_at: str = Field(description="UTC, ISO 8601")
    seconds: float


def report_schema() -> dict:
    """The JSON schema of ``report.json`` (``synth schema --report``)."""
    return RunReport.model_json_schema()


def check_report(text: str) -> RunReport:
    """Validate ``report.json``'s text (exactly what is written) against ``RunReport`` and return it, for the
    card and the page to read. A failure is a bug in synth, not the user's: it names the first offending key."""
    try:
        return RunReport.model_validate(json.loads(text))  # json.loads: NaN / Infinity as json.dumps writes them
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ReportError(
            f"report.json does not match synth.report.run.RunReport: {loc}: {first['msg']} ({e.error_count()} error(s))"
        ) from e


class ReportError(RuntimeError):
    """The run wrote a report its own model rejects: a bug in synth, so a traceback, not a one-line error."""
