"""Filters for generated text. Plain functions over records, arrays and callables (no runner import).

Queries, in this order (each sees only what the previous ones kept):

1. ``too_short`` / ``too_long``: character bounds on the stripped text;
2. ``duplicate``: exact duplicates after normalisation (NFKC, casefold, whitespace collapsed,
   punctuation stripped at the ends); the first in input order is kept;
3. ``eval_leak``: the normalised text equals an evaluation query (the source's own queries and
   ``eval_queries`` files), so training data never reproduces a test query;
4. ``near_duplicate``: greedy in input order, a query whose cosine to an already kept query is
   >= ``near_dup_threshold`` is dropped;
5. ``round_trip`` (Promptagator): the query's source document must be in the embedder's top-k.

Negatives: ``too_short``, ``copies_positive`` (normalised text equals the positive),
``restates_query`` (the query parroted back: normalised text equal to the query's or at least
``RESTATE_RATIO`` similar to it by ``difflib``; small models do this, and it is a passage no retriever
should learn to push away from its own query), ``duplicate`` (same normalised text as an earlier
negative of the same query), ``near_positive`` (cosine to the positive >= ``max_sim_to_positive``).

``embed(texts) -> float32 [n, d]`` is any encoder (rows are L2-normalised here); ``search(query_emb,
k) -> int64 [n, k]`` returns corpus rows (-1 padding allowed). Without ``search`` the round trip is
exact: the source document's rank is counted against ``corpus_embeddings``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from synth.core.errors import InputError
from synth.generate.config import QueryFilters, SyntheticNegativesConfig
from synth.core.text import normal_text
from synth.generate.records import SyntheticNegative, SyntheticQuery
from synth.core.records import Corpus
from synth.core.checks import iter_json_objects, iter_lines, require_file

Embed = Callable[[list[str]], np.ndarray]
Search = Callable[[np.ndarray, int], np.ndarray]

QUERY_FILTERS = ("too_short", "too_long", "duplicate", "eval_leak", "near_duplicate", "round_trip")
NEGATIVE_FILTERS = ("too_short", "copies_positive", "restates_query", "duplicate", "near_positive")
RESTATE_RATIO = 0.8
EVAL_TEXT_FIELDS = ("text", "query", "anchor", "question")


def load_eval_texts(paths: Iterable[str | Path]) -> list[str]:
    """Query texts of BEIR queries files / JSONL (field text, query, anchor or question) / .txt files."""
    texts: list[str] = []
    for path in paths:
        p = require_file(path, "a queries file (.jsonl or .txt)")
        if p.suffix.lower() == ".txt":
            texts.extend(t.strip() for _, t in iter_lines(p))
            continue
        for where, obj in iter_json_objects(p):
            field = next((f for f in EVAL_TEXT_FIELDS if isinstance(obj.get(f), str)), None)
            if field is None:
                raise InputError(where, f"expected a string field {' / '.join(EVAL_TEXT_FIELDS)}, got none")
            texts.append(obj[field])
    return texts


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def greedy_near_duplicates(emb: np.ndarray, threshold: float, block: int = 512) -> np.ndarray:
    """Keep mask: row i is kept unless its cosine to an earlier *kept* row is >= ``threshold``."""
    emb = _unit(emb)
    keep = np.zeros(len(emb), dtype=bool)
    kept_rows: list[int] = []
    for start in range(0, len(emb), block):
        part = emb[start : start + block]
        alive = np.ones(len(part), dtype=bool)
        if kept_rows:  # against everything kept in earlier blocks
            alive &= (part @ emb[kept_rows].T).max(axis=1) < threshold
        inner = part @ part.T
        for i in range(len(part)):  # within the block, in order
            if not alive[i]:
                continue
            keep[start + i] = True
            kept_rows.append(start + i)
            later = np.arange(len(part)) > i
            alive &= ~(later & (inner[i] >= threshold))
    return keep


def source_in_top_k(
    query_emb: np.ndarray,
    doc_rows: np.ndarray,
    k: int,
    search: Search | None = None,
    corpus_embeddings: np.ndarray | None = None,
    block: int = 256,
) -> np.ndarray:
    """Mask: is ``doc_rows[i]`` among the top-``k`` corpus rows for query i?"""
    if search is not None:
        rows = np.asarray(search(query_emb, k))
        return (rows == doc_rows[:, None]).any(axis=1)
    if corpus_embeddings is None:
        raise ValueError("round trip: needs a search function or the corpus embeddings")
    corpus_t = np.asarray(corpus_embeddings, dtype=np.float32).T
    out = np.zeros(len(query_emb), dtype=bool)
    for start in range(0, len(query_emb), block):
        q, rows = query_emb[start : start + block], doc_rows[start : start + block]
        scores = q @ corpus_t  # [b, N]
        own = scores[np.arange(len(q)), np.maximum(rows, 0)]
        rank = (scores > own[:, None]).sum(axis=1)  # documents strictly better than the source
        out[start : start + block] = (rank < k) & (rows >= 0)
    return out


def filter_queries(
    queries: list[SyntheticQuery],
    cfg: QueryFilters,
    embed: Embed | None,
    corpus: Corpus,
    eval_texts: Iterable[str] = (),
    search: Search | None = None,
    *,
    corpus_embeddings: np.ndarray | None = None,
) -> tuple[list[SyntheticQuery], dict[str, int], dict[str, str]]:
    """(kept queries in input order, {filter: dropped} for the enabled filters in order, {query id: filter})."""
    out = _QuerySurvivors(queries)
    out.apply("too_short", [len(q.text.strip()) >= cfg.min_chars for q in out.alive])
    out.apply("too_long", [len(q.text.strip()) <= cfg.max_chars for q in out.alive])
    if cfg.dedup:
        out.apply("duplicate", _first_of_each_text(out.alive))
    if cfg.leakage_guard:
        forbidden = {normal_text(t, loose=True) for t in eval_texts}
        forbidden.discard("")
        out.apply("eval_leak", [normal_text(q.text, loose=True) not in forbidden for q in out.alive])
    near, round_trip = cfg.near_dup_threshold is not None, cfg.round_trip_k is not None
    if (near or round_trip) and out.alive:
        if embed is None:
            raise ValueError("filter_queries: near-duplicate and round-trip filters need an embed function")
        _embedding_filters(out, cfg, embed, corpus, search, corpus_embeddings)
    else:  # nothing to embed: the enabled filters still report their (zero) drops
        if near:
            out.drops["near_duplicate"] = 0
        if round_trip:
            out.drops["round_trip"] = 0
    return out.alive, out.drops, out.dropped_by


class _QuerySurvivors:
    """The queries still alive after each filter, with every filter's drop count and each dropped query's filter."""

    def __init__(self, queries: list[SyntheticQuery]):
        self.alive = list(queries)
        self.drops: dict[str, int] = {}
        self.dropped_by: dict[str, str] = {}

    def apply(self, name: str, keep: list[bool]) -> None:
        """Keep the alive queries whose ``keep`` is true (in order); the rest count as dropped by ``name``."""
        self.drops[name] = 0
        survivors = []
        for q, ok in zip(self.alive, keep):
            if ok:
                survivors.append(q)
            else:
                self.drops[name] += 1
                self.dropped_by[q.id] = name
        self.alive = survivors


def _first_of_each_text(queries: list[SyntheticQuery]) -> list[bool]:
    """Keep mask: the first query of each normalised text, in input order."""
    seen: set[str] = set()
    keep = []
    for q in queries:
        key = normal_text(q.text, loose=True)
        keep.append(key not in seen)
        seen.add(key)
    return keep


def _embedding_filters(
    out: _QuerySurvivors,
    cfg: QueryFilters,
    embed: Embed,
    corpus: Corpus,
    search: Search | None,
    corpus_embeddings: np.ndarray | None,
) -> None:
    """``near_duplicate`` then ``round_trip`` (those enabled), over one embedding of the alive queries."""
    emb = _unit(embed([q.text for q in out.alive]))
    if cfg.near_dup_threshold is not None:
        mask = greedy_near_duplicates(emb, cfg.near_dup_threshold)
        emb = emb[mask]
        out.apply("near_duplicate", mask.tolist())
    if cfg.round_trip_k is not None and out.alive:
        rows = np.array([corpus.row_of.get(q.doc_id, -2) for q in out.alive], dtype=np.int64)
        k = min(cfg.round_trip_k, len(corpus))
        out.apply("round_trip", source_in_top_k(emb, rows, k, search, corpus_embeddings).tolist())
    elif cfg.round_trip_k is not None:  # near_duplicate left nothing to look up
        out.drops["round_trip"] = 0


def restates(passage: str, query: str) -> bool:
    """Normalised ``passage`` is the (normalised) query, or nearly: a reworded copy, not a passage."""
    if not query:
        return False
    if passage == query:
        return True
    if len(passage) > 2 * len(query):  # a real passage that mentions the query is judged later, not here
        return False
    return difflib.SequenceMatcher(None, passage, query, autojunk=False).ratio() >= RESTATE_RATIO


def filter_negatives(
    negatives: list[SyntheticNegative],
    cfg: SyntheticNegativesConfig,
    embed: Embed | None,
    positive_texts: Mapping[str, str],
) -> tuple[list[SyntheticNegative], dict[str, int]]:
    """(kept negatives in input order, {filter: dropped} in order). ``positive_texts``: positive id -> text."""
    drops: dict[str, int] = {name: 0 for name in NEGATIVE_FILTERS if name != "near_positive"}
    kept: list[SyntheticNegative] = []
    seen: set[tuple[str, str]] = set()
    for n in negatives:
        key = normal_text(n.text, loose=True)
        if len(n.text.strip()) < cfg.min_chars:
            drops["too_short"] += 1
        elif key == normal_text(positive_texts.get(n.positive_id, ""), loose=True):
            drops["copies_positive"] += 1
        elif restates(key, normal_text(n.query_text, loose=True)):
            drops["restates_query"] += 1
        elif (n.query_id, key) in seen:
            drops["duplicate"] += 1
        else:
            seen.add((n.query_id, key))
            kept.append(n)
    if cfg.max_sim_to_positive is not None:
        drops["near_positive"] = 0
        if kept:
            if embed is None:
                raise ValueError("filter_negatives: max_sim_to_positive needs an embed function")
            positive_ids = sorted({n.positive_id for n in kept})
            pos_emb = _unit(embed([positive_texts[p] for p in positive_ids]))
            row = {p: i for i, p in enumerate(positive_ids)}
            neg_emb = _unit(embed([n.text for n in kept]))
            sims = np.einsum("nd,nd->n", neg_emb, pos_emb[[row[n.positive_id] for n in kept]])
            mask = sims < cfg.max_sim_to_positive
            drops["near_positive"] = int((~mask).sum())
            kept = [n for n, ok in zip(kept, mask) if ok]
    return kept, drops
