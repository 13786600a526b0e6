"""Leakage check: training rows that overlap an evaluation split.

The evaluation split is a BEIR folder's ``queries.jsonl`` + ``qrels/<split>.tsv`` (only the queries
its qrels name). A training pair overlaps when
- ``query_id``: its query id is an evaluation query id;
- ``query_text``: its query text (whitespace collapsed, casefolded) equals an evaluation query's;
- ``positive``: its positive is a document some evaluation query is judged relevant to;
- ``negative``: one of its negatives is such a document.
Counts are per pair and per kind (a pair can count under several kinds), split by query origin
(real / synthetic: synthetic queries are written from training documents, which may themselves be
evaluation positives). Only ids and texts are compared; nothing is embedded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from synth.core.errors import InputError
from synth.core.text import normal_text
from synth.core.checks import iter_json_objects, iter_qrels

KINDS = ("query_id", "query_text", "positive", "negative")


@dataclass
class EvalSplit:
    folder: str
    split: str
    query_ids: set[str]
    query_texts: set[str]  # normalised
    doc_ids: set[str]  # documents with a positive grade for some evaluation query


def load_eval_split(folder: str | Path, split: str) -> EvalSplit | None:
    """The split's queries and relevant documents, or ``None`` when the folder has no such qrels file."""
    folder = Path(folder)
    qrels = folder / "qrels" / f"{split}.tsv"
    if not qrels.is_file():
        return None
    qids: set[str] = set()
    docs: set[str] = set()
    for _, qid, doc_id, grade in iter_qrels(qrels):
        qids.add(qid)
        if grade > 0:
            docs.add(doc_id)
    texts: set[str] = set()
    queries = folder / "queries.jsonl"
    if not queries.is_file():
        raise InputError(str(folder), "no queries.jsonl beside the evaluation qrels")
    for _, obj in iter_json_objects(queries):
        if str(obj.get("_id")) in qids and isinstance(obj.get("text"), str):
            texts.add(normal_text(obj["text"]))
    return EvalSplit(str(folder), split, qids, texts, docs)


def pair_overlaps(
    ev: EvalSplit, query_id: str, query_text: str, positive_id: str, negative_ids: Sequence[str]
) -> list[str]:
    """The kinds of overlap of one training pair (empty: none)."""
    kinds = []
    if query_id in ev.query_ids:
        kinds.append("query_id")
    if normal_text(query_text) in ev.query_texts:
        kinds.append("query_text")
    if positive_id in ev.doc_ids:
        kinds.append("positive")
    if any(d in ev.doc_ids for d in negative_ids):
        kinds.append("negative")
    return kinds


def check_pairs(
    ev: EvalSplit,
    query_ids: Sequence[str],
    query_texts: Sequence[str],
    positive_ids: Sequence[str],
    negative_ids: Sequence[Sequence[str] | None],
    origins: Sequence[str],
) -> tuple[list[bool], dict]:
    """(per pair: does it overlap?, report counts). A pair with ``negative_ids[i] is None`` (already
    dropped) is skipped."""
    by_kind: Counter = Counter()
    by_origin: dict[str, Counter] = {}
    overlapping = []
    checked = 0
    for qid, qtext, pid, negs, origin in zip(query_ids, query_texts, positive_ids, negative_ids, origins):
        if negs is None:
            overlapping.append(False)
            continue
        checked += 1
        kinds = pair_overlaps(ev, qid, qtext, pid, negs)
        overlapping.append(bool(kinds))
        bucket = by_origin.setdefault(origin, Counter())
        bucket["pairs"] += 1
        for k in kinds:
            by_kind[k] += 1
            bucket[k] += 1
        if kinds:
            bucket["overlapping"] += 1
    report = {
        "checked": True,
        "folder": ev.folder,
        "split": ev.split,
        "eval_queries": len(ev.query_ids),
        "eval_documents": len(ev.doc_ids),
        "pairs_checked": checked,
        "pairs_overlapping": sum(overlapping),
        "by_kind": {k: by_kind[k] for k in KINDS},
        "by_origin": {o: {k: c[k] for k in ("pairs", "overlapping", *KINDS)} for o, c in sorted(by_origin.items())},
    }
    return overlapping, report


def not_checked(reason: str) -> dict:
    return {"checked": False, "reason": reason}
