"""Mining: dense candidates per query -> masked ``PairBlock``s -> sampler -> backfill -> ``Mined``.

The miner owns every rule that must hold whatever the sampler does: all labelled positives of a
query, every exact copy or near-duplicate of one of them (``near_duplicate_key``; counted in the
report as ``positive_copies`` / ``positive_near_duplicates``), in a chunked corpus the other chunks of
their documents (``extra.same_document_chunks``), and every passage whose text equals the query are
excluded (``synth.exclusions``); filters run before sampling;
a pair the sampler leaves short (its window held too few admissible candidates, e.g. after a
filter) is backfilled from further down the query's dense ranking (``synth.select.backfill``); and an
invariant check proves that no pick is an excluded row.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from synth.select.backfill import Backfill
from synth.core.errors import UserError
from synth.core.strict import Section
from synth.core.records import Mined, Pairs, SourceData
from synth.samplers import MiningContext, PairBlock, Picks, build_sampler
from synth.core.seeding import stable_key
from synth.exclusions import excluded_rows_per_query
from synth.samplers.filters import keep_mask


def build_pairs(data: SourceData) -> Pairs:
    """One pair per (query, positive) in qrels order, skipping ids the sources already warned about."""
    q_row, d_row = data.queries.row_of, data.corpus.row_of
    qids, pids, qrows, prows = [], [], [], []
    for qid in data.queries.ids:
        for doc_id, grade in data.qrels.get(qid, {}).items():
            if grade > 0 and doc_id in d_row:
                qids.append(qid)
                pids.append(doc_id)
                qrows.append(q_row[qid])
                prows.append(d_row[doc_id])
    return Pairs(qids, pids, np.asarray(qrows, np.int64), np.asarray(prows, np.int64))


# Sampler settings that count raw ranks of the dense ranking: past the corpus size they mean "the whole
# corpus", and the samplers already read them that way (``candidate_depth``, slicing, ``gumbel_top``).
RANK_WINDOWS = ("range_max", "depth", "k1", "k1_prime", "k2")


def corpus_limits(mine_cfg, n_corpus: int) -> dict[str, dict]:
    """Check the mining settings against the loaded corpus: a request the corpus cannot meet is a
    one-line ``UserError`` naming the key; a rank window the recipe sets past the corpus is clamped,
    and the clamps (``{"mine.sampler.k1": {"set": .., "used": ..}}``) are returned for the report."""
    n = mine_cfg.n_negatives
    if n >= n_corpus:
        raise UserError(
            f"mine.n_negatives: {n} negatives per pair need a corpus of more than {n} documents "
            f"(one is the positive); the corpus has {n_corpus}"
        )
    sampler = mine_cfg.sampler
    skip = getattr(sampler, "range_min", 0)
    if skip >= n_corpus:
        raise UserError(f"mine.sampler.range_min: {skip} skips every document; the corpus has {n_corpus}")
    # Only values the recipe sets: a default past a small corpus (backfill_depth 1000) is no news.
    clamps = {
        f"mine.sampler.{name}": {"set": value, "used": n_corpus}
        for name in RANK_WINDOWS
        if name in sampler.model_fields_set and (value := getattr(sampler, name)) > n_corpus
    }
    depth = mine_cfg.backfill_depth
    if "backfill_depth" in mine_cfg.model_fields_set and depth is not None and depth > n_corpus:
        clamps["mine.backfill_depth"] = {"set": depth, "used": n_corpus}
    return clamps


class MineStats(Section):
    """Hard-negative mining counts: ``report.json`` -> ``mining``."""

    pairs: int = 0
    short_pairs: int = 0  # after backfill: fewer than n admissible candidates down to the backfill depth
    backfilled_pairs: int = 0  # pairs the sampler left short that got negatives from further down the ranking
    backfilled_negatives: int = 0
    filtered_candidates: int = 0
    candidate_depth: int = 0
    search_seconds: float = 0.0
    sample_seconds: float = 0.0
    positive_copies: int = Field(
        0,
        description="(query, passage) pairs never mined: the passage is an exact copy of one of the query's positives",
    )
    positive_near_duplicates: int = Field(
        0,
        description="(query, passage) pairs never mined: the passage differs from a positive only in case, "
        "spacing, punctuation or Unicode form",
    )
    extra: dict[str, Any] = Field(default_factory=dict, description="sampler-specific counts")


def _query_bound(pairs: Pairs, own: np.ndarray, pick) -> dict[int, float]:
    """query row -> ``pick`` (min or max) of its pairs' positive scores: the filters' anchor."""
    out: dict[int, float] = {}
    for qr, s in zip(pairs.query_rows.tolist(), own.tolist()):
        out[qr] = pick(out.get(qr, s), s)
    return out


def _pair_scores(query_emb, corpus_emb, qrows: np.ndarray, drows: np.ndarray) -> np.ndarray:
    return np.einsum("pd,pd->p", np.asarray(query_emb[qrows]), np.asarray(corpus_emb[drows])).astype(np.float32)


def mine(
    data: SourceData,
    pairs: Pairs,
    corpus_emb: np.ndarray,
    query_emb: np.ndarray,
    searcher,
    mine_cfg,
    query_block: int,
    seed: int,
    backfill: Backfill | None = None,
) -> tuple[Mined, MineStats]:
    """Negatives for every pair. ``backfill`` (default: one built here when ``mine.backfill_depth`` is
    not 0) fills what the sampler leaves short; pass the run's own to share its searched rankings."""
    sampler = build_sampler(mine_cfg.sampler)
    n_corpus = corpus_emb.shape[0]
    depth = sampler.candidate_depth(n_corpus)
    stats = MineStats(pairs=len(pairs), candidate_depth=depth)
    ctx = MiningContext(data.corpus, data.queries, corpus_emb, query_emb, seed, list(mine_cfg.filters))
    excluded = _excluded_rows(data, mine_cfg, backfill, stats)
    miner = _PairMiner(pairs, query_emb, corpus_emb, excluded, sampler, ctx, mine_cfg, stats)
    miner.search_and_sample(searcher, depth, query_block)

    if backfill is None and mine_cfg.backfill_depth != 0:
        backfill = make_backfill(
            sampler, searcher, query_emb, n_corpus, excluded, miner.anchor_of, mine_cfg, query_block
        )
    if backfill is not None:
        _backfill_short(miner.neg_rows, miner.neg_scores, pairs, backfill, stats)
    stats.short_pairs = int((miner.neg_rows < 0).any(axis=1).sum())
    mined = Mined(miner.neg_rows, miner.neg_scores, miner.own, sampler=mine_cfg.sampler.kind, seed=seed)
    return mined, stats


def _excluded_rows(data: SourceData, mine_cfg, backfill: Backfill | None, stats: MineStats) -> dict[int, np.ndarray]:
    """query row -> its excluded corpus rows, and their counts into ``stats``. A shared ``backfill`` has
    already worked them out for the same pairs, so they are taken from it rather than computed twice."""
    counts: dict[str, int] = {}
    if backfill is not None:
        excluded, counts = backfill.excluded, backfill.exclusion_counts
    else:
        excluded = excluded_rows_per_query(data, mine_cfg.exclude_query_text, counts)
    stats.positive_copies = counts.get("positive_copies", 0)
    stats.positive_near_duplicates = counts.get("positive_near_duplicates", 0)
    if "same_document_chunks" in counts:
        stats.extra["same_document_chunks"] = counts["same_document_chunks"]
    return excluded


class _PairMiner:
    """One ``mine`` call's sampling pass: the per-query positive scores and keys every block reads, and the
    ``neg_rows`` / ``neg_scores`` matrices the blocks fill (-1 / NaN where the sampler left a slot empty)."""

    def __init__(self, pairs: Pairs, query_emb, corpus_emb, excluded, sampler, ctx: MiningContext, mine_cfg, stats):
        self.pairs, self.query_emb, self.excluded = pairs, query_emb, excluded
        self.sampler, self.ctx, self.mine_cfg, self.stats = sampler, ctx, mine_cfg, stats
        self.n, self.n_corpus = mine_cfg.n_negatives, corpus_emb.shape[0]
        # Per-query positive scores: this pair's own, and the min / max over the query's positives.
        self.own = _pair_scores(query_emb, corpus_emb, pairs.query_rows, pairs.positive_rows)
        self.qmin, self.qmax = _query_bound(pairs, self.own, min), _query_bound(pairs, self.own, max)
        self.anchor_of = self.qmin if mine_cfg.positive_anchor == "min" else self.qmax
        self.query_key = {qr: stable_key(qid) for qr, qid in zip(pairs.query_rows.tolist(), pairs.query_ids)}
        self.pair_keys = np.asarray([stable_key(q, p) for q, p in zip(pairs.query_ids, pairs.positive_ids)], np.uint64)
        self.pairs_of: dict[int, list[int]] = {}
        for i, qr in enumerate(pairs.query_rows.tolist()):
            self.pairs_of.setdefault(qr, []).append(i)
        self.neg_rows = np.full((len(pairs), self.n), -1, np.int64)
        self.neg_scores = np.full((len(pairs), self.n), np.nan, np.float32)

    def search_and_sample(self, searcher, depth: int, query_block: int) -> None:
        """Search the mined queries ``query_block`` at a time and sample their pairs ``block_pairs`` at a time."""
        unique_queries = np.asarray(list(self.pairs_of), np.int64)
        # the mined queries' embeddings: the matrix itself when every query is mined in order (no copy)
        in_order = np.array_equal(unique_queries, np.arange(len(self.query_emb)))
        mined_emb = self.query_emb if in_order else self.query_emb[unique_queries]
        # an approximate index measures its recall on a sample of ALL the mined queries (not of the first block)
        searcher.calibrate(mined_emb, depth, self.n)
        # One search call for every block (the same block boundaries as one call per block), so an engine that
        # searches in workers (``Searcher.remote``) keeps several blocks in flight.
        if depth > 0 and len(unique_queries):
            blocks = iter(searcher.search(mined_emb, depth, query_block))
        block_pairs = self.mine_cfg.block_pairs
        for q_start in range(0, len(unique_queries), query_block):
            uq = unique_queries[q_start : q_start + query_block]
            t0 = time.perf_counter()
            if depth > 0:
                _, scores, rows = next(blocks)
            else:
                scores, rows = np.empty((len(uq), 0), np.float32), np.empty((len(uq), 0), np.int64)
            self.stats.search_seconds += time.perf_counter() - t0
            local = {qr: j for j, qr in enumerate(uq.tolist())}
            idx_all = np.asarray([i for qr in uq.tolist() for i in self.pairs_of[qr]], np.int64)
            for p_start in range(0, len(idx_all), block_pairs):
                idx = idx_all[p_start : p_start + block_pairs]
                which = np.asarray([local[qr] for qr in self.pairs.query_rows[idx].tolist()], np.int64)
                self.run_block(idx, rows[which].copy(), scores[which].copy())

    def run_block(self, idx: np.ndarray, cand_rows: np.ndarray, cand_scores: np.ndarray) -> None:
        """Mask and filter the candidates of pairs ``idx`` (in place), sample them, check and store the picks."""
        qrows = self.pairs.query_rows[idx]
        excl = [self.excluded[qr] for qr in qrows.tolist()]
        anchor = np.asarray([self.anchor_of[qr] for qr in qrows.tolist()], np.float32)
        exclusions = _Exclusions(excl, self.n_corpus)
        if cand_rows.shape[1]:
            self._drop_inadmissible(cand_rows, cand_scores, exclusions, anchor)
        block = self._pair_block(idx, qrows, excl, anchor, cand_rows, cand_scores)
        t0 = time.perf_counter()
        picks = self.sampler.sample(block, self.n, self.ctx)
        self.stats.sample_seconds += time.perf_counter() - t0
        _check_invariant(picks, exclusions, block.query_ids)
        self.neg_rows[idx] = picks.rows
        self.neg_scores[idx] = picks.scores
        for key, value in picks.extra.items():
            self.stats.extra[key] = self.stats.extra.get(key, 0) + value

    def _drop_inadmissible(self, cand_rows, cand_scores, exclusions: _Exclusions, anchor: np.ndarray) -> None:
        """Excluded candidates, then those the recipe's filters reject, become -1 / -inf (in place);
        already-empty slots (-inf) pass the filters so that only real rejections are counted."""
        _mask_excluded(cand_rows, cand_scores, exclusions)
        passed = keep_mask(self.ctx.filters, cand_scores, anchor) | ~np.isfinite(cand_scores)
        self.stats.filtered_candidates += int((~passed).sum())
        cand_rows[~passed] = -1
        cand_scores[~passed] = -np.inf

    def _pair_block(self, idx, qrows, excl, anchor, cand_rows, cand_scores) -> PairBlock:
        """The sampler's view of pairs ``idx``: ids, keys, positives, exclusions, anchors and candidates."""
        pairs = self.pairs
        return PairBlock(
            query_ids=[pairs.query_ids[i] for i in idx],
            positive_ids=[pairs.positive_ids[i] for i in idx],
            pair_keys=self.pair_keys[idx],
            query_keys=np.asarray([self.query_key[qr] for qr in qrows.tolist()], np.uint64),
            query_rows=qrows,
            positive_rows=pairs.positive_rows[idx],
            all_positive_rows=[pairs.positive_rows[self.pairs_of[qr]] for qr in qrows.tolist()],
            excluded_rows=excl,
            positive_score=self.own[idx],
            anchor_score=anchor,
            max_positive_score=np.asarray([self.qmax[qr] for qr in qrows.tolist()], np.float32),
            cand_rows=cand_rows,
            cand_scores=cand_scores,
        )


def make_backfill(
    sampler,
    searcher,
    query_emb,
    n_corpus: int,
    excluded: dict[int, np.ndarray],
    anchor: dict[int, float],
    mine_cfg,
    query_block: int,
) -> Backfill:
    """The run's ``Backfill``: same exclusions and filters as mining, starting at the sampler's window."""
    return Backfill(
        searcher,
        query_emb,
        n_corpus,
        excluded,
        anchor,
        list(mine_cfg.filters),
        getattr(sampler, "backfill_start_rank", 0),
        mine_cfg.backfill_depth,
        query_block,
    )


def backfill_for(
    data: SourceData, pairs: Pairs, corpus_emb, query_emb, searcher, mine_cfg, query_block: int
) -> Backfill:
    """A ``Backfill`` for ``pairs`` built the way ``mine`` builds its own (for the selection stage)."""
    counts: dict[str, int] = {}
    excluded = excluded_rows_per_query(data, mine_cfg.exclude_query_text, counts)
    own = _pair_scores(query_emb, corpus_emb, pairs.query_rows, pairs.positive_rows)
    anchor = _query_bound(pairs, own, min if mine_cfg.positive_anchor == "min" else max)
    backfill = make_backfill(
        build_sampler(mine_cfg.sampler),
        searcher,
        query_emb,
        corpus_emb.shape[0],
        excluded,
        anchor,
        mine_cfg,
        query_block,
    )
    backfill.exclusion_counts = counts
    return backfill


def _backfill_short(
    neg_rows: np.ndarray, neg_scores: np.ndarray, pairs: Pairs, backfill: Backfill, stats: MineStats
) -> None:
    """Fill the empty slots of short pairs (in place): picks first, then backfill in rank order."""
    short = np.flatnonzero((neg_rows < 0).any(axis=1))
    if not len(short):
        return
    seen = [set(neg_rows[i][neg_rows[i] >= 0].tolist()) for i in short.tolist()]
    want = [int((neg_rows[i] < 0).sum()) for i in short.tolist()]
    got = backfill.next(pairs.query_rows[short].tolist(), want, seen)
    for k, i in enumerate(short.tolist()):
        keep = neg_rows[i] >= 0
        rows = neg_rows[i][keep].tolist() + got.rows[k]
        scores = neg_scores[i][keep].tolist() + got.scores[k]
        width = neg_rows.shape[1]
        neg_rows[i] = (rows + [-1] * width)[:width]
        neg_scores[i] = (scores + [np.nan] * width)[:width]
        if got.rows[k]:
            stats.backfilled_pairs += 1
            stats.backfilled_negatives += len(got.rows[k])
    empty = np.zeros(0, np.int64)
    exclusions = _Exclusions(
        [backfill.excluded.get(qr, empty) for qr in pairs.query_rows[short].tolist()], backfill.n_corpus
    )
    _check_invariant(
        Picks(neg_rows[short], neg_scores[short]), exclusions, [pairs.query_ids[i] for i in short.tolist()]
    )


class _Exclusions:
    """A block's excluded rows, indexed once and then checked against any [B, m] row matrix."""

    def __init__(self, excl: list[np.ndarray], n_corpus: int):
        self.longest = max((len(e) for e in excl), default=0)
        self.n_corpus = n_corpus
        if self.longest <= 32:  # few exclusions per pair (the usual case): a padded table to compare against
            self.table = np.full((len(excl), self.longest), -2, np.int64)
            for i, e in enumerate(excl):
                self.table[i, : len(e)] = e
        else:  # long lists: sortable (pair, row) keys for np.isin
            lens = np.fromiter((len(e) for e in excl), np.int64, len(excl))
            self.banned = np.repeat(np.arange(len(excl), dtype=np.int64), lens) * n_corpus + np.concatenate(excl)

    def hits(self, rows: np.ndarray) -> np.ndarray:
        """Mask of ``rows`` [B, m] that are in their pair's excluded list."""
        if self.longest > 32:
            keys = np.arange(len(rows), dtype=np.int64)[:, None] * self.n_corpus + np.where(rows >= 0, rows, 0)
            return np.isin(keys, self.banned) & (rows >= 0)
        hit = np.zeros(rows.shape, bool)
        for j in range(self.longest):
            hit |= rows == self.table[:, j : j + 1]
        return hit


def _mask_excluded(cand_rows: np.ndarray, cand_scores: np.ndarray, exclusions: _Exclusions) -> None:
    """Set excluded candidates to -1 / -inf in place."""
    hit = exclusions.hits(cand_rows)
    cand_rows[hit] = -1
    cand_scores[hit] = -np.inf


def _check_invariant(picks: Picks, exclusions: _Exclusions, query_ids: list[str]) -> None:
    """The miner's guarantee, whatever the sampler: no excluded row, no duplicate within a pair."""
    bad = exclusions.hits(picks.rows).any(axis=1)
    ordered = np.sort(picks.rows, axis=1)
    bad |= ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any(axis=1)
    if bad.any():
        raise AssertionError(
            f"sampler returned an excluded or duplicate document for query {query_ids[int(np.argmax(bad))]!r}"
        )
