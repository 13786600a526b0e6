"""What mining never picks as a query's negative (``excluded_rows_per_query``), apart from the mining loop
(``synth.mine``) so that the miner, its backfill and the false-negative probe share one rule.
"""

from __future__ import annotations

import numpy as np

from synth.core.records import SourceData
from synth.core.text import near_duplicate_key, normal_text


def _visible_length(text: str) -> int:
    """Characters that survive ``normal_text`` (casefold aside): a cheap, exact bound before normalising."""
    return len(text) - sum(text.count(c) for c in " \t\n\r\f\v")


def _first_token(text: str) -> str:
    parts = text.split(None, 1)
    return parts[0].casefold() if parts else ""


def _copies_of_positives(texts: list[str], positive_rows: set[int]) -> dict[int, tuple[list[int], list[int]]]:
    """positive row -> (other rows that are exact copies of it, other rows that are near-duplicates of it)."""
    keys: dict[bytes, list[int]] = {}
    for row in positive_rows:
        key = near_duplicate_key(texts[row])
        if key:  # a passage of punctuation only is nobody's near-duplicate
            keys.setdefault(key, []).append(row)
    if not keys:
        return {}
    rows_of_key: dict[bytes, list[int]] = {}
    for row, text in enumerate(texts):
        key = near_duplicate_key(text)
        if key in keys:
            rows_of_key.setdefault(key, []).append(row)
    out: dict[int, tuple[list[int], list[int]]] = {}
    for key, rows in rows_of_key.items():
        if len(rows) < 2:
            continue  # the positive alone
        normal = {row: normal_text(texts[row]) for row in rows}
        for pos in keys[key]:
            others = [r for r in rows if r != pos]
            exact = [r for r in others if normal[r] == normal[pos]]
            out[pos] = (exact, [r for r in others if normal[r] != normal[pos]])
    return out


def _chunks_of_documents(corpus) -> dict[str, list[int]] | None:
    """document id -> its corpus rows, for a chunked corpus (None otherwise). The other chunks of a query's
    own document are never its negatives: they overlap its chunk by ``chunk.overlap`` words and continue
    the same text, so whether they answer the query is unknown, and a document is never its own
    query's negative."""
    if corpus.doc_ids is None:
        return None
    out: dict[str, list[int]] = {}
    for row, doc_id in enumerate(corpus.doc_ids):
        out.setdefault(doc_id, []).append(row)
    return out


def excluded_rows_per_query(
    data: SourceData, exclude_query_text: bool, counts: dict[str, int] | None = None
) -> dict[int, np.ndarray]:
    """query row -> sorted corpus rows never allowed as its negatives: its labelled positives, the
    positives of every query with the same (normalised) text, exact copies and near-duplicates
    (``near_duplicate_key``) of those positives, and passages equal to that text.
    Queries sharing a text are one information need; one's positive is never the other's negative.
    A copy of a positive is the positive under another id: mined as a negative, it would teach the model
    to push the answer away. ``counts`` (when given) gets ``positive_copies`` and
    ``positive_near_duplicates``: the (query, passage) exclusions of each kind, positives themselves not
    counted."""
    d_row = data.corpus.row_of
    by_text: dict[str, list[int]] = {}
    for qid, text in zip(data.queries.ids, data.queries.texts):
        rows = by_text.setdefault(normal_text(text), [])
        rows.extend(d_row[d] for d, g in data.qrels.get(qid, {}).items() if g > 0 and d in d_row)
    positives_of_text = {key: set(rows) for key, rows in by_text.items()}
    copies = _copies_of_positives(data.corpus.texts, set().union(*positives_of_text.values()))
    copies_of_text: dict[str, tuple[set[int], set[int]]] = {}
    chunks_of = _chunks_of_documents(data.corpus)
    same_document: dict[str, int] = {}
    for key, positives in positives_of_text.items():
        exact = {r for p in positives for r in copies.get(p, ((), ()))[0]} - positives
        near = {r for p in positives for r in copies.get(p, ((), ()))[1]} - positives - exact
        copies_of_text[key] = (exact, near)
        by_text[key].extend(exact | near)
        if chunks_of is not None:  # the other chunks of a positive's (or a copy's) document: see _chunks_of_documents
            same = {r for p in positives | exact | near for r in chunks_of[data.corpus.doc_ids[p]]}
            same -= positives | exact | near
            same_document[key] = len(same)
            by_text[key].extend(same)
    if exclude_query_text:
        # Normalising every passage is the cost. Two exact necessary conditions skip almost all of them:
        # the first token must be some query's first token (split stops at the first whitespace), and
        # the non-whitespace length must not exceed the longest query's.
        first_tokens = {_first_token(t) for t in data.queries.texts}
        longest = max((_visible_length(t) for t in data.queries.texts), default=0)
        for row, text in enumerate(data.corpus.texts):
            if _first_token(text) in first_tokens and _visible_length(text) <= longest:
                key = normal_text(text)
                if key in by_text:
                    by_text[key].append(row)
    rows_of_text = {key: np.unique(np.asarray(rows, np.int64)) for key, rows in by_text.items()}
    keys = [normal_text(text) for text in data.queries.texts]
    if counts is not None:
        counts["positive_copies"] = sum(len(copies_of_text[k][0]) for k in keys)
        counts["positive_near_duplicates"] = sum(len(copies_of_text[k][1]) for k in keys)
        if chunks_of is not None:
            counts["same_document_chunks"] = sum(same_document[k] for k in keys)
    return {row: rows_of_text[key] for row, key in enumerate(keys)}
