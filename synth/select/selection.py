"""Selection: the negatives a pair publishes, judged, mixed and backfilled.

Per (query, positive) pair, its candidates form one stream: the mined pool in the sampler's order,
then (when the pair is still short) backfill from further down the query's dense ranking
(``synth.select.backfill``), hardest first. Selection goes down that stream in rounds:

1. the judge cascade judges what is new (the whole pool and the pair's synthetic negatives in
   round 1, backfill after that; verdicts persist in the store, so a resumed run judges nothing twice);
2. the policy (``synth.judge.policies``) runs over everything the pair has had judged;
3. mixing (``synth.select.mix``) takes the first cleared candidates: ``n_synthetic`` synthetic ones, the
   rest mined, deduplicated by text;
4. a pair still short of ``n_mined + n_synthetic`` asks backfill for about as many more as it is
   missing (scaled by the share of its candidates the judges cleared so far).

A pair is short at the end only when its ranking is exhausted down to ``mine.backfill_depth`` (or
backfill is off), or when the policy dropped it; the report counts each reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from synth.judge.base import Candidate
from synth.core.records import MINED, Example, Negative, Pairs, Passage, SourceData
from synth.judge.policies import apply_policy
from synth.select.mix import MixStats, mix, mix_pair

# why a pair ended short (report keys)
EXHAUSTED = "ranking_exhausted"
NO_BACKFILL = "backfill_off"
DROPPED = "dropped_by_policy"
MAX_ASK = 256  # backfill candidates one pair asks for per round, at most


@dataclass
class Selected:
    negatives: list[list[Negative] | None]  # per pair; None = dropped by the policy
    promoted: list[tuple[str, str]]  # (query_id, doc_id) relabelled as positives (corpus documents only)
    policy_counts: dict
    mix: MixStats
    report: dict = field(default_factory=dict)


def _candidates(
    pairs: Pairs, data: SourceData, positive_scores: Sequence[float], i: int, negatives: Sequence[Negative]
) -> list[Candidate]:
    qid, pid = pairs.query_ids[i], pairs.positive_ids[i]
    qtext = data.queries.texts[int(pairs.query_rows[i])]
    ptext = data.corpus.texts[int(pairs.positive_rows[i])]
    return [
        Candidate(qid, qtext, n.id, n.text, pid, ptext, float(n.score), float(positive_scores[i])) for n in negatives
    ]


def _ask(missing: int, cleared: int, seen: int) -> int:
    """Backfill candidates a short pair asks for: what it misses, scaled up by how few of its candidates
    were cleared so far; a pair the judges cleared nothing of asks for as many again as it has seen."""
    ask = math.ceil(missing / max(cleared / max(1, seen), 0.2)) if cleared else max(missing, seen)
    return min(MAX_ASK, max(missing, ask))


def select(
    pairs: Pairs,
    data: SourceData,
    positive_scores: Sequence[float],
    pool: Sequence[Sequence[Negative]],
    synthetic: Sequence[Sequence[Negative]],
    n_mined: int,
    n_synthetic: int,
    *,
    judge=None,
    policy: str = "keep",
    cap: int | None = None,
    backfill=None,
) -> Selected:
    """Select every pair's negatives (see the module docstring). ``judge``: a ``CascadeRunner`` (or
    None: nothing is judged and the policy keeps everything); ``backfill``: a ``Backfill`` or None."""
    selection = _SelectionRounds(
        pairs, data, positive_scores, pool, synthetic, n_mined, n_synthetic, judge, policy, cap, backfill
    )
    while True:
        selection.rounds += 1
        open_pairs = [i for i in range(len(pairs)) if selection.status[i] == "open"]
        if judge is not None:
            selection.judge_new(open_pairs)
        need, want = selection.short_pairs(open_pairs)
        if not need:
            break
        selection.extend_by_backfill(need, want)
    return selection.selected()


class _SelectionRounds:
    """One ``select`` call's state across its rounds: each pair's candidate stream (pool, then backfill),
    how far it has been judged, whether its ranking is exhausted, and its status (open, full or why short)."""

    def __init__(
        self, pairs, data, positive_scores, pool, synthetic, n_mined, n_synthetic, judge, policy, cap, backfill
    ):
        self.pairs, self.data, self.positive_scores, self.synthetic = pairs, data, positive_scores, synthetic
        self.n_mined, self.n_synthetic, self.target = n_mined, n_synthetic, n_mined + n_synthetic
        self.judge, self.policy, self.cap, self.backfill = judge, policy, cap, backfill
        n_pairs = len(pairs)
        self.streams = [list(p) for p in pool]
        self.judged_upto = [0] * n_pairs
        self.exhausted = [False] * n_pairs
        self.status: list[str] = ["open"] * n_pairs
        self.added = [0] * n_pairs
        self.positives = [data.corpus.texts[r] for r in pairs.positive_rows.tolist()]
        self.rounds = 0

    def judge_new(self, open_pairs: list[int]) -> None:
        """Judge what is new: the pool and synthetic negatives in round 1, backfill after that."""
        batch: list[Candidate] = []
        sources: list[str] = []
        for i in open_pairs:
            new = self.streams[i][self.judged_upto[i] :] + (list(self.synthetic[i]) if self.rounds == 1 else [])
            batch += _candidates(self.pairs, self.data, self.positive_scores, i, new)
            sources += [n.source for n in new]
            self.judged_upto[i] = len(self.streams[i])
        self.judge.judge(batch, sources)

    def policy_on(self, indices: list[int]) -> tuple[dict[tuple[str, str], Example], dict]:
        """The policy over what each pair has had judged: its surviving examples by (query, positive)."""
        pairs = self.pairs
        examples = [
            Example(
                pairs.query_ids[i],
                "",
                [Passage(pairs.positive_ids[i], "")],
                [Passage(n.id, "") for n in list(self.streams[i]) + list(self.synthetic[i])],
            )
            for i in indices
        ]
        judge = self.judge
        verdicts = judge.verdicts(examples) if judge is not None else {}
        kept, counts = apply_policy(examples, verdicts, self.policy if judge is not None else "keep", self.cap)
        return {(ex.query_id, ex.positives[0].id): ex for ex in kept}, counts

    def short_pairs(self, open_pairs: list[int]) -> tuple[list[int], list[int]]:
        """Mix each open pair's cleared candidates and settle its status; the pairs still short that backfill
        can extend are returned with how many candidates each asks for."""
        survivors, _ = self.policy_on(open_pairs)
        need: list[int] = []
        want: list[int] = []
        for i in open_pairs:
            ex = survivors.get((self.pairs.query_ids[i], self.pairs.positive_ids[i]))
            if ex is None:
                self.status[i] = DROPPED
                continue
            keep = {n.id for n in ex.negatives}
            chosen = mix_pair(
                self.positives[i],
                [m for m in self.streams[i] if m.id in keep],
                [s for s in self.synthetic[i] if s.id in keep],
                self.n_mined,
                self.n_synthetic,
                MixStats(),
            )
            if len(chosen) >= self.target:
                self.status[i] = "full"
            elif self.backfill is None:
                self.status[i] = NO_BACKFILL
            elif self.exhausted[i]:
                self.status[i] = EXHAUSTED
            else:
                need.append(i)
                seen = len(self.streams[i]) + len(self.synthetic[i])
                want.append(_ask(self.target - len(chosen), len(keep), seen))
        return need, want

    def extend_by_backfill(self, need: list[int], want: list[int]) -> None:
        """Append the next backfill candidates to the streams of pairs ``need``."""
        data = self.data
        seen = [_rows_of(self.streams[i], data) for i in need]
        got = self.backfill.next(self.pairs.query_rows[need].tolist(), want, seen)
        for k, i in enumerate(need):
            self.streams[i] += [
                Negative(data.corpus.ids[r], data.corpus.texts[r], s, MINED) for r, s in zip(got.rows[k], got.scores[k])
            ]
            self.added[i] += len(got.rows[k])
            self.exhausted[i] = got.exhausted[k]
            if not got.rows[k] and got.exhausted[k]:  # nothing new to judge: no need for another round
                self.status[i] = EXHAUSTED

    def selected(self) -> Selected:
        """The final pass: the policy over everything judged, the promoted positives, then mixing."""
        pairs, n_pairs = self.pairs, len(self.pairs)
        survivors, policy_counts = self.policy_on(list(range(n_pairs)))
        examples = [survivors.get((pairs.query_ids[i], pairs.positive_ids[i])) for i in range(n_pairs)]
        mined_ids = {(pairs.query_ids[i], m.id) for i in range(n_pairs) for m in self.streams[i]}
        promoted = list(
            dict.fromkeys(
                (ex.query_id, p.id)
                for ex in examples
                if ex is not None
                for p in ex.positives[1:]
                if (ex.query_id, p.id) in mined_ids
            )
        )
        policy_counts["promoted_corpus_documents"] = len(promoted)
        kept = [None if ex is None else {n.id for n in ex.negatives} for ex in examples]
        negatives, mix_stats = mix(self.positives, self.streams, self.synthetic, kept, self.n_mined, self.n_synthetic)
        report = _report(negatives, self.status, self.added, self.rounds, self.n_mined, self.n_synthetic, self.backfill)
        return Selected(negatives, promoted, policy_counts, mix_stats, report)


def _report(
    negatives: list, status: list[str], added: list[int], rounds: int, n_mined: int, n_synthetic: int, backfill
) -> dict:
    """``report.json`` → ``selection``: full, short (by reason) and dropped pairs, and what backfill added."""
    target = n_mined + n_synthetic
    short = [i for i, negs in enumerate(negatives) if negs is not None and len(negs) < target]
    reasons = {EXHAUSTED: 0, NO_BACKFILL: 0}
    for i in short:
        reasons[NO_BACKFILL if status[i] == NO_BACKFILL else EXHAUSTED] += 1
    dropped = sum(x is None for x in negatives)
    return {
        "target": {"mined": n_mined, "synthetic": n_synthetic},
        "rounds": rounds,
        "pairs": len(negatives),
        "pairs_full": len(negatives) - len(short) - dropped,
        "pairs_short": len(short),
        "short_reasons": reasons,
        "pairs_dropped_by_policy": dropped,
        "pairs_backfilled": sum(1 for a in added if a),
        "backfilled_candidates": sum(added),
        "backfill_depth_searched": backfill.searched_depth if backfill is not None else None,
    }


def _rows_of(stream: list[Negative], data: SourceData) -> set[int]:
    row_of = data.corpus.row_of
    return {row_of[n.id] for n in stream if n.id in row_of}
