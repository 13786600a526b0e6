"""``bm25`` and ``passage_bm25``: static BM25 negatives (DPR's "BM25" negatives).

One ``bm25s`` index over ``ctx.corpus.texts`` is built per run (per distinct set of index settings)
and kept in ``ctx.cache["bm25"]``. ``bm25`` queries it with the query text; ``passage_bm25`` queries
it with the pair's positive passage, which finds passages lexically close to the positive.

The ``depth`` best BM25 results are the candidates (``depth`` counts BM25 ranks, the positive and
other excluded rows included, like ``topk``'s raw ranks). Results with a BM25 score of 0 share no
term with the query text: bm25s returns them only to fill ``depth`` and their order is arbitrary,
so they are not candidates. Excluded rows (labelled positives, query-text duplicates) and rows the
filters reject (judged on the dense score s(q,d)) are dropped; ``pick: top`` then takes the first
``n`` by BM25 rank, ``pick: random`` ``n`` uniformly. Returned scores are dense scores, not BM25.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.core.seeding import gumbel_top, uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks
from synth.samplers.random import first_true_columns
from synth.core.strict import StrictModel


class _BM25Settings(StrictModel):
    depth: int = Field(100, gt=0, description="BM25 results per query text that are candidates")
    pick: Literal["top", "random"] = Field("top", description="the best n by BM25 rank, or n uniformly")
    k1: float = Field(1.5, ge=0.0, description="BM25 term-frequency saturation")
    b: float = Field(0.75, ge=0.0, le=1.0, description="BM25 length normalisation")
    method: Literal["robertson", "atire", "bm25l", "bm25+", "lucene"] = Field(
        "lucene", description="bm25s scoring variant"
    )
    stopwords: str | None = Field("en", description="bm25s stopword list ('en' = English), or null for none")
    lowercase: bool = Field(True, description="lowercase texts before tokenising")
    token_pattern: str = Field(r"(?u)\b\w\w+\b", description="regex a token must match (bm25s default)")
    stemmer: str | None = Field(
        None, description="PyStemmer language (e.g. 'english'); null = no stemming; needs the PyStemmer package"
    )


class BM25Config(_BM25Settings):
    kind: Literal["bm25"] = "bm25"


class PassageBM25Config(_BM25Settings):
    kind: Literal["passage_bm25"] = "passage_bm25"


class _BM25Base:
    kind: ClassVar[str]

    def __init__(self, config: _BM25Settings):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return 0

    def _query_texts(self, block: PairBlock, ctx: MiningContext) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        c = self.config
        size = len(ctx.corpus.texts)
        k = min(c.depth, size)
        if k == 0 or len(block) == 0:
            return _empty(len(block), n)
        index = _index(ctx, c)
        tokens = index.tokenize(self._query_texts(block, ctx))
        docs, bm25 = index.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        rows = np.where(np.asarray(bm25) > 0, np.asarray(docs, dtype=np.int64), -1)
        dense = ctx.score(block.query_rows, rows)
        ok = ctx.admissible(block, rows, dense)
        if c.pick == "top":
            # bm25s returns results best first, so column order is BM25 rank order.
            cols = first_true_columns(ok, n)
        else:
            log_w = np.where(ok, 0.0, -np.inf)
            cols = gumbel_top(log_w, uniforms(ctx.seed, block.pair_keys, self.kind, k), n)
        safe = np.maximum(cols, 0)
        out_rows = np.where(cols >= 0, np.take_along_axis(rows, safe, axis=1), -1)
        out_scores = np.where(cols >= 0, np.take_along_axis(dense, safe, axis=1), np.nan).astype(np.float32)
        return Picks(rows=out_rows, scores=out_scores)


class BM25Sampler(_BM25Base):
    kind: ClassVar[str] = "bm25"

    def _query_texts(self, block: PairBlock, ctx: MiningContext) -> list[str]:
        return [ctx.queries.texts[r] for r in block.query_rows]


class PassageBM25Sampler(_BM25Base):
    kind: ClassVar[str] = "passage_bm25"

    def _query_texts(self, block: PairBlock, ctx: MiningContext) -> list[str]:
        return [ctx.corpus.texts[r] for r in block.positive_rows]


class _Index:
    """A bm25s retriever plus the tokenizer settings it was built with (queries must match)."""

    def __init__(self, texts: list[str], c: _BM25Settings):
        import bm25s

        self._bm25s = bm25s
        self._stemmer = _stemmer(c.stemmer)
        self._settings = dict(lower=c.lowercase, token_pattern=c.token_pattern, stopwords=c.stopwords or [])
        self.retriever = bm25s.BM25(k1=c.k1, b=c.b, method=c.method)
        corpus_tokens = bm25s.tokenize(texts, stemmer=self._stemmer, show_progress=False, **self._settings)
        self.retriever.index(corpus_tokens, show_progress=False)

    def tokenize(self, texts: list[str]) -> list[list[str]]:
        # Strings, not ids: ids would come from a fresh vocabulary unrelated to the index's.
        return self._bm25s.tokenize(
            texts, stemmer=self._stemmer, return_ids=False, show_progress=False, **self._settings
        )


def _index(ctx: MiningContext, c: _BM25Settings) -> _Index:
    """The run's index for these settings, built on first use (bm25 and passage_bm25 share it)."""
    key = (c.k1, c.b, c.method, c.stopwords, c.lowercase, c.token_pattern, c.stemmer)
    built = ctx.cache.setdefault("bm25", {})
    if key not in built:
        built[key] = _Index(ctx.corpus.texts, c)
    return built[key]


def _stemmer(language: str | None):
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("bm25 stemmer needs the PyStemmer package: pip install PyStemmer") from exc
    return Stemmer.Stemmer(language).stemWords


def _empty(b: int, n: int) -> Picks:
    return Picks(rows=np.full((b, n), -1, dtype=np.int64), scores=np.full((b, n), np.nan, dtype=np.float32))
