"""``random``: negatives drawn uniformly from the whole corpus (DPR's "random" negatives).

Every row of the corpus is equally likely except the pair's excluded rows (labelled positives,
passages whose text equals the query) and rows the filters reject. The sampler never builds an
N-wide matrix per pair: it reads a pair's counter-based stream of uniform draws
``row_j = floor(u_j · N)`` (``u_j = uniforms(seed, pair_key, "random", ·)[j]``) and keeps the first
``n`` distinct admissible rows of that stream. It first reads ``oversample·n + |excluded|`` draws, then a
4x longer prefix of the *same* stream for pairs still short only, so the picks are a function of
(seed, pair) alone whatever the block. A pair still short once the prefix reaches the corpus size or
``max_draws`` (small corpora, strict filters) walks a seeded permutation of the whole corpus instead,
scored in chunks: that finds every admissible row, so a slot is -1 only when the corpus truly has
fewer than ``n`` admissible rows for the pair. The walk costs one brute-force scan of the corpus
per such pair, the price of a filter that rejects almost everything.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from synth.core.seeding import uniforms
from synth.samplers.base import MiningContext, PairBlock, Picks
from synth.core.strict import StrictModel

_CHUNK = 16_384  # corpus rows scored at once per pair when walking a permutation


class RandomConfig(StrictModel):
    kind: Literal["random"] = "random"
    oversample: int = Field(4, gt=0, description="first draw per pair: oversample·n + |excluded| rows")
    max_draws: int = Field(
        16_384,
        gt=0,
        description="per pair, the longest prefix of random draws read before walking the whole corpus",
    )


class RandomSampler:
    kind: ClassVar[str] = "random"

    def __init__(self, config: RandomConfig):
        self.config = config

    def candidate_depth(self, corpus_size: int) -> int:
        return 0

    def sample(self, block: PairBlock, n: int, ctx: MiningContext) -> Picks:
        size = len(ctx.corpus_emb)
        rows = np.full((len(block), n), -1, dtype=np.int64)
        scores = np.full((len(block), n), np.nan, dtype=np.float32)
        if size == 0 or n == 0:
            return Picks(rows=rows, scores=scores)
        # Per-pair prefix length of the draw stream: a pair's own length only, never the block's.
        width = np.array([self.config.oversample * n + len(x) for x in block.excluded_rows], dtype=np.int64)
        todo = np.arange(len(block))
        walks = 0
        while len(todo):
            walk = width[todo] >= size
            for i in todo[walk]:
                rows[i], scores[i] = _walk_permutation(block, i, n, ctx)
                walks += 1
            todo = todo[~walk]
            for group in _groups(todo, width, ctx.corpus_emb.shape[1]):
                rows[group], scores[group] = _first_from_stream(block, group, width[group], n, ctx)
            todo = todo[(rows[todo] < 0).any(axis=1)]
            # Still short after max_draws draws: the next round walks the whole corpus instead.
            grown = np.minimum(width[todo] * 4, self.config.max_draws)
            width[todo] = np.where(width[todo] >= self.config.max_draws, size, grown)
        # Summed over blocks by the miner: pairs that needed the exhaustive walk.
        return Picks(rows=rows, scores=scores, extra={"random_corpus_walks": walks})


def _groups(idx: np.ndarray, width: np.ndarray, dim: int, budget: int = 1 << 25):
    """Split pairs so that each group's gathered draws (pairs x width x dim floats) fit ``budget``."""
    group, used = [], 0
    for i in idx:
        cost = int(width[i]) * dim
        if group and used + cost > budget:
            yield np.array(group)
            group, used = [], 0
        group.append(i)
        used += cost
    if group:
        yield np.array(group)


def _first_from_stream(block: PairBlock, idx: np.ndarray, width: np.ndarray, n: int, ctx: MiningContext):
    """The first ``n`` distinct admissible rows among the first ``width[i]`` draws of each pair."""
    size = len(ctx.corpus_emb)
    sub = _sub_block(block, idx)
    u = uniforms(ctx.seed, sub.pair_keys, "random", int(width.max()))
    draws = np.minimum((u * size).astype(np.int64), size - 1)
    draws[np.arange(draws.shape[1])[None, :] >= width[:, None]] = -1  # beyond this pair's prefix
    s = ctx.score(sub.query_rows, draws)
    ok = ctx.admissible(sub, draws, s) & _first_occurrence(draws)
    cols = first_true_columns(ok, n)
    safe = np.maximum(cols, 0)
    rows = np.where(cols >= 0, np.take_along_axis(draws, safe, axis=1), -1)
    scores = np.where(cols >= 0, np.take_along_axis(s, safe, axis=1), np.nan).astype(np.float32)
    return rows, scores


def _walk_permutation(block: PairBlock, i: int, n: int, ctx: MiningContext):
    """Exhaustive fallback for one pair: a seeded permutation of the corpus, scored chunk by chunk."""
    size = len(ctx.corpus_emb)
    sub = _sub_block(block, np.array([i]))
    order = np.argsort(uniforms(ctx.seed, sub.pair_keys, "random-walk", size)[0], kind="stable")
    rows, scores = [], []
    for start in range(0, size, _CHUNK):
        chunk = order[None, start : start + _CHUNK].astype(np.int64)
        s = ctx.score(sub.query_rows, chunk)
        ok = ctx.admissible(sub, chunk, s)[0]
        rows.extend(chunk[0, ok].tolist())
        scores.extend(s[0, ok].tolist())
        if len(rows) >= n:
            break
    out_rows = np.full(n, -1, dtype=np.int64)
    out_scores = np.full(n, np.nan, dtype=np.float32)
    k = min(n, len(rows))
    out_rows[:k], out_scores[:k] = rows[:k], scores[:k]
    return out_rows, out_scores


def _sub_block(block: PairBlock, idx: np.ndarray) -> PairBlock:
    """The pairs ``idx`` of a block, without candidates (this sampler never reads them)."""
    return PairBlock(
        query_ids=[block.query_ids[i] for i in idx],
        positive_ids=[block.positive_ids[i] for i in idx],
        pair_keys=block.pair_keys[idx],
        query_keys=block.query_keys[idx],
        query_rows=block.query_rows[idx],
        positive_rows=block.positive_rows[idx],
        all_positive_rows=[block.all_positive_rows[i] for i in idx],
        excluded_rows=[block.excluded_rows[i] for i in idx],
        positive_score=block.positive_score[idx],
        anchor_score=block.anchor_score[idx],
        max_positive_score=block.max_positive_score[idx],
        cand_rows=np.zeros((len(idx), 0), dtype=np.int64),
        cand_scores=np.zeros((len(idx), 0), dtype=np.float32),
    )


def _first_occurrence(rows: np.ndarray) -> np.ndarray:
    """True where a row value appears for the first time in its line (a stable sort keeps the
    earliest column of equal values first)."""
    order = np.argsort(rows, axis=1, kind="stable")
    ordered = np.take_along_axis(rows, order, axis=1)
    repeat = np.zeros(rows.shape, dtype=bool)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    first = np.empty(rows.shape, dtype=bool)
    np.put_along_axis(first, order, ~repeat, axis=1)
    return first


def first_true_columns(mask: np.ndarray, n: int) -> np.ndarray:
    """Column indices [B, n] of the first ``n`` True entries per line; -1 where short."""
    width = mask.shape[1]
    key = np.where(mask, np.arange(width)[None, :], width)
    cols = np.sort(key, axis=1)[:, :n]
    cols = np.where(cols < width, cols, -1)
    if cols.shape[1] < n:
        cols = np.concatenate([cols, np.full((len(cols), n - cols.shape[1]), -1, dtype=cols.dtype)], axis=1)
    return cols.astype(np.int64)
