"""BEIR folder (``corpus.jsonl[.gz]``, ``queries.jsonl``, ``qrels/<split>.tsv``), read and written.

Reading is the ``beir`` source kind (``BeirSource``, ``load_beir``; listed in ``synth.sources.REGISTRY``),
with the input checks of ``synth/core/checks.py`` (``docs/input-checks.md``). Writing (``export``) is the
evaluation-set form a run writes with ``output.files: [beir]``: ``corpus.jsonl`` (the whole corpus),
``queries.jsonl`` (the queries of the rows) and ``qrels/train.tsv`` (their positives, relabelled false
negatives included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from synth.core.checks import (
    UniqueIds,
    iter_json_objects,
    iter_qrels,
    optional_str,
    passage_text,
    require_str,
)
from synth.core.errors import InputError
from synth.core.files import atomic_file
from synth.core.records import Corpus, Findings, Qrels, Queries, SourceData
from synth.core.strict import StrictModel
from synth.formats.base import Format, Group

BEIR_LAYOUT = "a BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv)"


class BeirSource(StrictModel):
    kind: Literal["beir"] = "beir"
    license: str = Field(
        "unknown",
        description="licence of the corpus and queries (an SPDX-style id such as "
        "'cc-by-4.0'); copied to the report and the dataset card",
    )
    path: str = Field(description="BEIR folder, relative to the recipe file")
    split: str = Field("train", description="qrels/<split>.tsv")
    min_grade: int = Field(1, ge=1, description="qrels grades at or above this are positives")


def find_one(folder: Path, stem: str) -> Path:
    """``<stem>.jsonl`` or ``<stem>.jsonl.gz``: exactly one of them must exist."""
    found = [p for p in (folder / f"{stem}.jsonl", folder / f"{stem}.jsonl.gz") if p.is_file()]
    if len(found) != 1:
        got = "both" if found else "neither"
        raise InputError(str(folder), f"expected one of {stem}.jsonl or {stem}.jsonl.gz, got {got}")
    return found[0]


def read_corpus(path: str | Path, findings: Findings) -> tuple[Corpus, set[str]]:
    """A BEIR corpus file -> (corpus without empty passages, ids of the empty ones).

    Every line needs string ``_id`` and ``text``; ``title`` may be missing or null. A passage whose
    title and text are both blank is counted as ``empty_doc`` and left out of the corpus: it can
    be neither a meaningful positive nor a meaningful negative.
    """
    ids: list[str] = []
    texts: list[str] = []
    empty: set[str] = set()
    unique = UniqueIds("_id")
    for where, obj in iter_json_objects(path):
        doc_id = require_str(obj, "_id", where, non_empty=True)
        text = require_str(obj, "text", where)
        title = optional_str(obj, "title", where)
        unique.add(doc_id, where)
        passage = passage_text(title, text)
        if not passage:
            findings.warn("empty_doc", where)
            empty.add(doc_id)
            continue
        ids.append(doc_id)
        texts.append(passage)
    return Corpus(ids=ids, texts=texts), empty


def read_queries(path: str | Path) -> dict[str, tuple[str, str]]:
    """A BEIR queries file -> ``{query_id: (where, text)}`` in file order (texts stripped)."""
    queries: dict[str, tuple[str, str]] = {}
    unique = UniqueIds("_id")
    for where, obj in iter_json_objects(path):
        query_id = require_str(obj, "_id", where, non_empty=True)
        text = require_str(obj, "text", where)
        unique.add(query_id, where)
        queries[query_id] = (where, text.strip())
    return queries


def _qrels_path(folder: Path, split: str) -> Path:
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        got = f"splits {splits}" if splits else "no qrels/*.tsv at all"
        raise InputError(str(path), f"expected the qrels file of split {split!r}, got {got}")
    return path


def load_beir(config: BeirSource) -> SourceData:
    folder = Path(config.path)
    if not folder.is_dir():
        raise InputError(str(folder), f"expected {BEIR_LAYOUT}, got {'a file' if folder.exists() else 'nothing'}")
    corpus_path = find_one(folder, "corpus")
    queries_path = find_one(folder, "queries")
    qrels_path = _qrels_path(folder, config.split)

    findings = Findings()
    corpus, empty_docs = read_corpus(corpus_path, findings)
    all_queries = read_queries(queries_path)
    doc_rows = corpus.row_of

    positives: Qrels = {}
    seen: set[tuple[str, str]] = set()
    for where, query_id, doc_id, grade in iter_qrels(qrels_path):
        if (query_id, doc_id) in seen:
            findings.warn("duplicate_qrel", where)  # the first row for the pair wins
            continue
        seen.add((query_id, doc_id))
        if query_id not in all_queries:
            findings.warn("qrels_unknown_query", where)
            continue
        if doc_id not in doc_rows and doc_id not in empty_docs:
            findings.warn("qrels_unknown_doc", where)
            continue
        if grade < config.min_grade:
            continue  # a judged non-positive: not part of the run, not a finding
        if doc_id in empty_docs:
            findings.warn("empty_positive", where)
            continue
        positives.setdefault(query_id, {})[doc_id] = grade

    ids: list[str] = []
    texts: list[str] = []
    qrels: Qrels = {}
    for query_id, (where, text) in all_queries.items():
        if query_id not in positives:
            continue  # no positive in this split: simply not part of the run
        if not text:
            findings.warn("empty_query", where)
            continue
        ids.append(query_id)
        texts.append(text)
        qrels[query_id] = positives[query_id]
    if not ids:
        raise InputError(
            str(qrels_path),
            f"expected at least one query with a non-empty text and a positive (score >= {config.min_grade}) "
            "in the corpus, got none",
        )
    return SourceData(corpus=corpus, queries=Queries(ids=ids, texts=texts), qrels=qrels, findings=findings)


# -- writing --

EXPORT_PATH = "beir"  # a run's folder, relative to its output folder


def _write_lines(path: Path, lines) -> int:
    n = 0
    with atomic_file(path, text=True) as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    return n


def export(groups: list[Group], corpus: Corpus, out_dir: Path) -> dict:
    """Passages are written as embedded (title + text in ``text``, empty ``title``)."""
    folder = out_dir / EXPORT_PATH
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs = _write_lines(
        folder / "corpus.jsonl",
        (json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) for d, t in zip(corpus.ids, corpus.texts)),
    )
    queries = _write_lines(
        folder / "queries.jsonl", (json.dumps({"_id": qid, "text": q}, ensure_ascii=False) for qid, q, _, _ in groups)
    )
    qrels = (
        _write_lines(
            folder / "qrels" / "train.tsv",
            ["query-id\tcorpus-id\tscore"] + [f"{qid}\t{d}\t1" for qid, _, pos, _ in groups for d, _ in pos],
        )
        - 1
    )
    return {"path": EXPORT_PATH, "corpus": docs, "queries": queries, "qrels": qrels}


FORMAT = Format(
    help=f"DIR/{EXPORT_PATH}: corpus.jsonl, queries.jsonl, qrels/train.tsv, the evaluation-set form", export=export
)
