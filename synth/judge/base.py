"""The judge protocol and the records a cascade passes around.

A judge looks at candidate negatives of a query (each beside the query's positive) and returns one
``StageVerdict`` per candidate: ``negative`` (keep it as a negative), ``false_negative`` (it is
relevant: it must not be kept as a negative) or ``uncertain`` (escalate to the next stage). Judges
never see list positions as identities: every candidate carries its ``doc_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

    from synth.core.records import Qrels, SourceData

Verdict = Literal["negative", "false_negative", "uncertain"]
VERDICTS: tuple[str, ...] = ("negative", "false_negative", "uncertain")


@dataclass(frozen=True)
class Candidate:
    """One mined negative to judge, with the context every judge kind needs."""

    query_id: str
    query: str
    doc_id: str  # the candidate negative
    doc: str
    positive_id: str  # the query's positive it is compared against
    positive: str
    bi_score: float = float("nan")  # bi-encoder s(q, d-) when known (from mining)
    positive_bi_score: float = float("nan")  # bi-encoder s(q, d+)

    @property
    def key(self) -> tuple[str, str]:
        return (self.query_id, self.doc_id)


@dataclass
class StageVerdict:
    verdict: Verdict
    score: float = float("nan")  # the stage's number (margin, cross-encoder difference, LLM confidence)
    model: str = ""
    prompt_sha256: str = ""
    detail: str = ""  # short reason: "parse failure: invalid_json", "refusal", thresholds hit ...
    failed: bool = False  # the judge could not decide (parse failure, refusal): escalates


@dataclass
class Judgement:
    """Every stage's record for one (query_id, doc_id) and the cascade's final verdict."""

    query_id: str
    doc_id: str
    verdict: Verdict  # final: the deciding stage's verdict, or "uncertain" after the last stage
    stage: str  # name of the deciding stage ("" when none decided)
    stages: list[dict] = field(default_factory=list)  # [{stage, kind, verdict, score, model, prompt_sha256, detail}]

    @property
    def score(self) -> float:
        return self.stages[-1]["score"] if self.stages else float("nan")

    @property
    def model(self) -> str:
        return self.stages[-1]["model"] if self.stages else ""


class Judge(Protocol):
    kind: str
    name: str  # the stage name from the cascade file

    def fingerprint(self) -> str:
        """Identity of this judge's decisions (kind, model, thresholds, prompt hash): a stored verdict is
        reused only when the fingerprint matches."""

    def judge(self, candidates: Sequence[Candidate]) -> list[StageVerdict]:
        """One verdict per candidate, aligned. Must not raise on bad model output: fail closed by
        returning ``uncertain`` with ``failed=True``."""


@dataclass
class JudgeContext:
    """What a judge that learns from the run's own data gets (``fn_risk``): the source as the run sees
    it, its embeddings and dense search. Built by the pipeline; judges that need none ignore it.

    ``labelled`` holds the labelled positives of the source's own queries (what a model may learn
    from); ``data.qrels`` may also hold synthetic queries' positives (what a candidate is compared
    against). ``query_emb`` rows follow ``data.queries``. ``search(query_rows, k)`` returns the
    run's top-k (scores, corpus rows), -1 past the corpus. ``embed_passages`` embeds texts that are
    not in the corpus (LLM-written negatives) with the run's embedder. ``fingerprint`` identifies
    all of it (source view, embedder, index), so stored verdicts are reused only for the same data.
    ``n_select`` negatives a pair keeps; ``select_depth``: how far down a query's ranking selection may
    go for them (the run's backfill depth; 0 = no further than the judged pool)."""

    data: "SourceData"
    labelled: "Qrels"
    corpus_emb: "np.ndarray"
    query_emb: "np.ndarray"
    search: Callable
    fingerprint: str
    seed: int = 0
    n_select: int = 5
    select_depth: int = 0
    embed_passages: Callable | None = None
    cache_dir: Path | None = None
