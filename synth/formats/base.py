"""What every format module fills in: the ``Format`` protocol, and the in-memory forms readers and writers share.

- ``RelabelInput``: a relabel ``--input`` read as ``Example``s (a query, its positives, its negatives), plus
  what its writer needs to write them back in the same format (the input's rows, columns, raw lines).
- ``Group``: one query of a run's output as (query_id, query, positives, negatives), each passage an
  ``(id, text)``; what a run's ``output.files`` writers (Tevatron, BEIR) take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from synth.core.records import Corpus, Example

Group = tuple[str, str, list[tuple[str, str]], list[tuple[str, str]]]


@dataclass
class Row:
    """One input row (HF) as ids: its positive and its negatives, and the row index for other columns."""

    index: int
    positive_id: str
    negative_ids: list[str]


@dataclass
class RelabelInput:
    source: str  # the path or Hub id as given
    kind: str  # the reading format's key in ``synth.formats.FORMATS``: "hf" | "tevatron"
    layout: str  # a key of ``st.LAYOUTS`` ("n-tuple" | "triplet") or "tevatron"
    n: int  # negatives per n-tuple row (1 for triplet, 0 for tevatron)
    examples: list[Example]
    rows: dict[str, list[Row]] = field(default_factory=dict)  # HF: query_id -> its input rows
    columns: list[str] = field(default_factory=list)  # HF: the input's columns, in order
    table: dict[str, list] = field(default_factory=dict)  # HF: non-text column values by row
    scores: dict[tuple[str, str], float] = field(default_factory=dict)  # (qid, doc_id) -> mined bi score
    raw: dict[str, dict] = field(default_factory=dict)  # tevatron: query_id -> the line's dict
    passages: dict[tuple[str, str], dict] = field(default_factory=dict)  # tevatron: (qid, docid) -> passage
    features: object = None  # HF: the input's ``datasets.Features``
    # what the reader left out, by reason (``negatives_equal_to_positive``, ``repeated_passages``): counted, never silent
    dropped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "layout": self.layout,
            "n": self.n,
            "queries": len(self.examples),
            "rows": sum(len(r) for r in self.rows.values()) or len(self.examples),
            "positives": sum(len(e.positives) for e in self.examples),
            "negatives": sum(len(e.negatives) for e in self.examples),
            "dropped": dict(self.dropped),
        }


@dataclass(frozen=True)
class Format:
    """What one on-disk format can do; ``None`` where it cannot. Every output is written to a temporary
    name and renamed into place (``synth.core.files``), so a crash never leaves a half-written file."""

    help: str = ""  # what it writes, for the recipe's schema (formats with an ``export``)
    # relabel --input: is ``source`` (a path or Hub id, as given) in this format? Asked in registry order.
    accepts: Callable[[str], bool] | None = None
    # relabel --input -> ``RelabelInput``
    read: Callable[[str], RelabelInput] | None = None
    # relabel output: the judged ``Example``s written back in the input's format under the output folder
    write: Callable[[RelabelInput, list[Example], Path], dict] | None = None
    # a run's ``output.files`` entry, under the run's output folder: returns {"path": where, **counts}
    export: Callable[[list[Group], Corpus, Path], dict] | None = None
