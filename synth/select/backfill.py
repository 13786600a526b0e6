"""Backfill: the rest of a query's dense ranking, for pairs that a sampler, a filter or a judge left short.

When a pair has fewer negatives than it needs, selection goes on down the query's dense ranking,
hardest first: the best-ranked candidates the pair has not seen yet that are admissible (not a
labelled positive or a query-text duplicate, passing the positive-aware filters). It starts at
``start_rank`` (a sampler's window start, e.g. ``topk.range_min``: ranks the recipe skips on
purpose stay skipped) and searches deeper on demand, doubling the depth, down to ``max_rank`` raw
ranks (``mine.backfill_depth``) or the whole corpus. A pair is short only when that is exhausted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synth.samplers.filters import keep_mask


@dataclass
class BackfillResult:
    rows: list[list[int]]  # per request, new candidate rows in rank order
    scores: list[list[float]]
    exhausted: list[bool]  # per request: nothing more is admissible down to the depth limit


class Backfill:
    def __init__(
        self,
        searcher,
        query_emb: np.ndarray,
        n_corpus: int,
        excluded: dict[int, np.ndarray],
        anchor: dict[int, float],
        filters: list,
        start_rank: int,
        max_rank: int | None,
        block: int = 1024,
    ):
        self.searcher = searcher
        self.query_emb = query_emb
        self.excluded = excluded
        self.anchor = anchor
        self.filters = list(filters)
        self.start = max(0, start_rank)
        self.limit = n_corpus if max_rank is None else min(n_corpus, max_rank)
        self.block = block
        self.n_corpus = n_corpus
        self._ranking: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # query row -> (rows, scores) searched so far
        self.searched_depth = 0  # the deepest search made (report)
        self.exclusion_counts: dict[str, int] = {}  # what ``excluded`` holds, by kind (``mine.MineStats``)

    def _search(self, query_rows: list[int], depth: int) -> None:
        qr = np.asarray(query_rows, np.int64)
        for start, scores, rows in self.searcher.search(self.query_emb[qr], depth, self.block):
            for j in range(len(rows)):
                # ties broken by row, so that the order never depends on how deep a search went
                order = np.lexsort((np.where(rows[j] >= 0, rows[j], np.iinfo(np.int64).max), -scores[j]))
                self._ranking[int(qr[start + j])] = (rows[j][order], scores[j][order])
        self.searched_depth = max(self.searched_depth, depth)

    def _admissible(self, qrow: int, seen: set[int]) -> tuple[np.ndarray, np.ndarray]:
        rows, scores = self._ranking[qrow]
        rows, scores = rows[self.start :], scores[self.start :]
        ok = rows >= 0
        excl = self.excluded.get(qrow)
        if excl is not None and len(excl):
            ok &= ~np.isin(rows, excl)
        if seen:
            ok &= ~np.isin(rows, np.fromiter(seen, np.int64, len(seen)))
        if self.filters:
            ok &= keep_mask(self.filters, scores[None, :], np.asarray([self.anchor.get(qrow, np.inf)], np.float32))[0]
        return rows[ok], scores[ok]

    def next(self, query_rows: list[int], want: list[int], seen: list[set[int]]) -> BackfillResult:
        """Up to ``want[i]`` new admissible candidates for request i (a pair of query ``query_rows[i]``
        that has already seen ``seen[i]``), in rank order."""
        n = len(query_rows)
        out_rows: list[list[int]] = [[] for _ in range(n)]
        out_scores: list[list[float]] = [[] for _ in range(n)]
        exhausted = [False] * n
        todo = [i for i in range(n) if want[i] > 0]
        if self.limit <= self.start:
            return BackfillResult(out_rows, out_scores, [want[i] > 0 for i in range(n)])
        while todo:
            # search (deeper) for the queries whose ranking is not deep enough yet
            need: dict[int, int] = {}
            for i in todo:
                qr = query_rows[i]
                have = len(self._ranking[qr][0]) if qr in self._ranking else 0
                if have == 0:
                    need[qr] = max(need.get(qr, 0), min(self.limit, max(self.start + 4 * want[i], 64)))
            for depth in sorted(set(need.values())):
                self._search([q for q, d in need.items() if d == depth], depth)
            deeper: dict[int, int] = {}
            still = []
            for i in todo:
                qr = query_rows[i]
                rows, scores = self._admissible(qr, seen[i])
                take = min(want[i], len(rows))
                out_rows[i] = rows[:take].tolist()
                out_scores[i] = scores[:take].astype(float).tolist()
                have = len(self._ranking[qr][0])
                if take < want[i]:
                    if have >= self.limit:
                        exhausted[i] = True
                    else:
                        deeper[qr] = min(self.limit, 2 * have)
                        still.append(i)
            for depth in sorted(set(deeper.values())):
                self._search([q for q, d in deeper.items() if d == depth], depth)
            todo = still
        return BackfillResult(out_rows, out_scores, exhausted)
