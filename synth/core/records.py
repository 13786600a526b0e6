"""Typed records that flow between stages.

Stages are plain functions over these records; no stage reaches into another stage's module.
Row numbers (``int64``) index the corpus / query matrices; string ids are kept beside them for output.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]  # the passage as embedded: "title text" (title omitted when empty)

    def __len__(self) -> int:
        return len(self.ids)

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
