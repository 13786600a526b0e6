"""(anchor, positive) pairs -> ``SourceData``; shared by the JSONL and Hugging Face pair sources.

* Queries are the distinct anchors, in order of first appearance, with id ``"q" + 16 hex`` of
  blake2b(anchor). Passages are the distinct positives, with id ``"d" + 16 hex`` of blake2b(text).
* Texts are stripped before they are compared or hashed.
* With an extra corpus (a BEIR ``corpus.jsonl[.gz]``), its passages come first and keep their ids;
  a positive whose text equals a corpus passage maps to that passage's id (the first one if several
  share the text). Other positives are appended after the corpus.
* Each anchor gets all its positives, grade 1.

A field or column that holds negatives (``negative``, ``negatives``, ``negative_1``.., ``negative_passages``,
``hard_negatives``) is refused (``given_negatives``): pairs input has no given negatives, synth mines them, and
dropping the field without a word would lose what the user meant to train on.

Warnings (row dropped): ``empty_query`` (blank anchor), ``empty_positive`` (blank positive),
``duplicate_pair`` (the same (anchor, positive) again). No usable pair at all is an ``InputError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from synth.core.errors import InputError
from synth.core.records import Corpus, Findings, Qrels, Queries, SourceData
from synth.core.text import content_id
from synth.formats.beir import read_corpus


_NEGATIVE_NAME = re.compile(r"(hard_)?negatives?(_\d+|_passages)?", re.IGNORECASE)


def given_negatives(names: Iterable[str], where: str) -> None:
    """Refuse a field / column of negatives in a pairs input, naming it and where it is."""
    found = next((name for name in names if isinstance(name, str) and _NEGATIVE_NAME.fullmatch(name)), None)
    if found is not None:
        raise InputError(
            where,
            f'expected (anchor, positive) pairs, got field "{found}": a pairs source has no given negatives '
            "(synth mines them); remove the field, or judge the negatives you have with `synth relabel` "
            "(a triplet / n-tuple dataset or Tevatron JSONL)",
        )


def build_pairs(rows: Iterable[tuple[str, str, str]], source: str, corpus_path: str | None = None) -> SourceData:
    """``rows`` yields ``(where, anchor, positive)`` with both already checked to be strings."""
    findings = Findings()
    if corpus_path is not None:
        corpus, _ = read_corpus(corpus_path, findings)
    else:
        corpus = Corpus(ids=[], texts=[])
    doc_ids, doc_texts = list(corpus.ids), list(corpus.texts)
    id_of_text: dict[str, str] = {}
    for doc_id, text in zip(doc_ids, doc_texts):
        id_of_text.setdefault(text, doc_id)
    known_ids = set(doc_ids)

    query_ids: list[str] = []
    query_texts: list[str] = []
    qrels: Qrels = {}
    for where, anchor, positive in rows:
        anchor, positive = anchor.strip(), positive.strip()
        if not anchor:
            findings.warn("empty_query", where)
            continue
        if not positive:
            findings.warn("empty_positive", where)
            continue
        doc_id = id_of_text.get(positive)
        if doc_id is None:
            doc_id = "d" + content_id(positive)
            if doc_id in known_ids:  # a corpus passage already uses this id for another text
                raise InputError(where, f'expected positive id "{doc_id}" to be free, got it taken by a corpus passage')
            id_of_text[positive] = doc_id
            known_ids.add(doc_id)
            doc_ids.append(doc_id)
            doc_texts.append(positive)
        query_id = "q" + content_id(anchor)
        judged = qrels.get(query_id)
        if judged is None:
            judged = qrels[query_id] = {}
            query_ids.append(query_id)
            query_texts.append(anchor)
        if doc_id in judged:
            findings.warn("duplicate_pair", where)
            continue
        judged[doc_id] = 1

    if not query_ids:
        raise InputError(source, "expected at least one (anchor, positive) pair with non-empty texts, got none")
    return SourceData(
        corpus=Corpus(ids=doc_ids, texts=doc_texts),
        queries=Queries(ids=query_ids, texts=query_texts),
        qrels=qrels,
        findings=findings,
    )
