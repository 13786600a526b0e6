"""Typed records that flow between stages.

Stages are plain functions over these records; no stage reaches into another stage's module.
Row numbers (``int64``) index the corpus / query matrices; string ids are kept beside them for output.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]  # the passage as embedded: "title text" (title omitted when empty)
    # A chunked corpus (``kind: corpus``): per row, the document it was cut from and its character offset in
    # that document's passage. None for sources whose rows are whole documents.
    doc_ids: list[str] | None = None
    offsets: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def document_of(self, row: int) -> str:
        """The id of the document row ``row`` belongs to (its own id for an unchunked corpus)."""
        return self.doc_ids[row] if self.doc_ids is not None else self.ids[row]

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {doc_id: row for row, doc_id in enumerate(self.ids)}


@dataclass
class Queries:
    ids: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def row_of(self) -> dict[str, int]:
        return {query_id: row for row, query_id in enumerate(self.ids)}


# query_id -> {doc_id: relevance grade}; only grades > 0 are positives.
Qrels = dict[str, dict[str, int]]


@dataclass
class Findings:
    """Input-check findings that are warnings (errors raise ``InputError`` instead)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def warn(self, kind: str, where: str, keep: int = 5) -> None:
        self.counts[kind] += 1
        bucket = self.examples.setdefault(kind, [])
        if len(bucket) < keep:
            bucket.append(where)

    def as_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": self.examples}


@dataclass
class SourceData:
    corpus: Corpus
    queries: Queries
    qrels: Qrels
    findings: Findings = field(default_factory=Findings)


@dataclass
class Pairs:
    """One row per (query, labelled positive): the unit that mining and output work on."""

    query_ids: list[str]
    positive_ids: list[str]
    query_rows: np.ndarray  # int64 [P] rows in the query matrix
    positive_rows: np.ndarray  # int64 [P] rows in the corpus matrix

    def __len__(self) -> int:
        return len(self.query_ids)


@dataclass
class Mined:
    """What mining produced for every pair, aligned with ``Pairs``."""

    negative_rows: np.ndarray  # int64 [P, n]; -1 marks a slot the sampler could not fill
    negative_scores: np.ndarray  # float32 [P, n]; NaN where the row is -1
    positive_scores: np.ndarray  # float32 [P] s(q, own positive)
    sampler: str
    seed: int


# -- negatives and judged examples -----------------------------------------------------------------
MINED = "mined"
SYNTHETIC = "synthetic"


@dataclass
class Negative:
    """One negative of one pair, with where it came from and (when judged) the cascade's verdict."""

    id: str  # corpus doc id (mined) or synthetic negative id ("sn-...")
    text: str
    score: float  # bi-encoder s(q, d-)
    source: str  # MINED | SYNTHETIC
    verdict: str = ""  # final cascade verdict; "" when not judged
    stage: str = ""  # the deciding judge stage
    judge_score: float = math.nan
    model: str = ""
    prompt_sha256: str = ""


# A neutral record for judging and policies (``judge.policies``): any output format maps in and out of it.
@dataclass(frozen=True)
class Passage:
    id: str
    text: str


@dataclass(frozen=True)
class Example:
    query_id: str
    query: str
    positives: list[Passage] = field(default_factory=list)
    negatives: list[Passage] = field(default_factory=list)
