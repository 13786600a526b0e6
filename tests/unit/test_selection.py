"""Selection with backfill (synth/selection.py, synth/backfill.py): real mining, a real judge cascade
(the bi-encoder margin, which flags every candidate scoring close to its positive), a real verdict store.

The answer is known: a pair's published negatives must be the first candidates down its query's dense
ranking that are admissible and cleared, and a pair may be short only when fewer than n such candidates
exist down to the backfill depth."""

from __future__ import annotations

import numpy as np
import pytest

from synth.index import Searcher
from synth.judge.runner import CascadeRunner
from synth.judge.config import Cascade
from synth.mine import backfill_for, build_pairs, mine
from synth.formats.rows import negatives_from_mined
from synth.recipe import Recipe
from synth.core.records import Corpus, Queries, SourceData
from synth.select.selection import EXHAUSTED, select

MARGIN = -0.05  # a candidate scoring within 0.05 of its positive (or above it) is flagged


def _world(n_docs: int = 400, n_queries: int = 25, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_docs, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = rng.normal(size=(n_queries, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ emb.T
    # each query's positive: its 8th best document, so that the 7 above it are all flagged by the margin
    qrels = {f"q{j}": {f"d{int(np.argsort(-scores[j])[7])}": 1} for j in range(n_queries)}
    data = SourceData(
        Corpus([f"d{i}" for i in range(n_docs)], [f"passage {i}" for i in range(n_docs)]),
        Queries([f"q{j}" for j in range(n_queries)], [f"query {j}" for j in range(n_queries)]),
        qrels,
    )
    return data, emb, q


def _recipe(tmp_path, n: int, backfill_depth, filters=None) -> Recipe:
    return Recipe.model_validate(
        {
            "source": {"kind": "beir", "path": str(tmp_path), "split": "test"},
            "embed": {"cache_dir": str(tmp_path / "cache")},
            "index": {"factory": "Flat", "device": "cpu"},
            "mine": {
                "n_negatives": n,
                "sampler": {"kind": "topk", "range_max": 5},
                "backfill_depth": backfill_depth,
                "filters": filters or [],
            },
        }
    )


def _expected(data, emb, q, pairs, i: int, n: int, depth: int) -> list[str]:
    """The first n admissible, cleared documents down the ranking of pair i, within ``depth`` ranks."""
    qr, pr = int(pairs.query_rows[i]), int(pairs.positive_rows[i])
    s = q[qr] @ emb.T
    out = []
    for row in np.argsort(-s, kind="stable")[:depth].tolist():
        if row != pr and s[row] - s[pr] < MARGIN:
            out.append(data.corpus.ids[row])
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("depth", [None, 10])
def test_selection_is_never_short_while_the_ranking_holds_enough_cleared_candidates(tmp_path, depth):
    data, emb, q = _world()
    recipe = _recipe(tmp_path, 3, depth)
    pairs = build_pairs(data)
    searcher = Searcher.from_config(recipe.index, emb, 0)
    backfill = backfill_for(data, pairs, emb, q, searcher, recipe.mine, 64)
    mined, _ = mine(data, pairs, emb, q, searcher, recipe.mine, 64, 0, backfill=backfill)
    cascade = Cascade.model_validate(
        {
            "name": "m",
            "stages": [
                {
                    "kind": "embedding_margin",
                    "name": "margin",
                    "negative_below": MARGIN,
                    "false_negative_at_or_above": MARGIN,
                }
            ],
        }
    )
    runner = CascadeRunner(cascade, tmp_path / "store")
    try:
        sel = select(
            pairs,
            data,
            mined.positive_scores.tolist(),
            negatives_from_mined(mined, data.corpus),
            [[] for _ in range(len(pairs))],
            3,
            0,
            judge=runner,
            policy="drop_false_negatives",
            backfill=backfill,
        )
    finally:
        runner.close()
    limit = len(data.corpus) if depth is None else depth
    short = 0
    for i, negs in enumerate(sel.negatives):
        want = _expected(data, emb, q, pairs, i, 3, limit)
        assert [x.id for x in negs] == want  # the first cleared ones, in rank order: nothing lost, nothing skipped
        short += len(want) < 3
    assert sel.report["pairs_short"] == short == sel.report["short_reasons"][EXHAUSTED]
    if depth is None:
        assert short == 0  # the whole corpus is there to backfill from
    else:
        assert short == len(pairs)  # 7 flagged documents and the positive fill 8 of the 10 ranks allowed
    assert sel.report["pairs_backfilled"] > 0 and sel.report["rounds"] >= 2


def test_mining_backfills_what_a_filter_leaves_short(tmp_path):
    """topk over 5 ranks + a margin filter that rejects the 7 documents above each positive: without
    backfill every pair is short; with it every pair gets the next admissible documents, none excluded."""
    data, emb, q = _world()
    pairs = build_pairs(data)
    filters = [{"kind": "margin", "m": 0.0}]
    off = _recipe(tmp_path, 3, 0, filters)
    searcher = Searcher.from_config(off.index, emb, 0)
    mined_off, stats_off = mine(data, pairs, emb, q, searcher, off.mine, 64, 0)
    assert stats_off.short_pairs == len(pairs) and (mined_off.negative_rows < 0).all()
    on = _recipe(tmp_path, 3, None, filters)
    mined, stats = mine(data, pairs, emb, q, searcher, on.mine, 64, 0)
    assert stats.short_pairs == 0 and stats.backfilled_pairs == len(pairs)
    for i in range(len(pairs)):
        s = q[int(pairs.query_rows[i])] @ emb.T
        pos = int(pairs.positive_rows[i])
        rows = mined.negative_rows[i].tolist()
        assert pos not in rows and len(set(rows)) == 3
        assert all(s[r] <= s[pos] for r in rows)  # the filter holds for backfilled negatives too
        order = [r for r in np.argsort(-s, kind="stable").tolist() if r != pos and s[r] <= s[pos]]
        assert rows == order[:3]  # the hardest admissible ones


def test_what_a_run_must_not_keep_quiet_is_one_line_each():
    from synth.pipeline.stages.select import selection_notices

    quiet = {
        "judging": {"final": {"negative": 40, "false_negative": 60, "uncertain": 0}, "stages": [{"model_report": {}}]},
        "selection": {"pairs": 10, "pairs_short": 0, "target": {"mined": 3, "synthetic": 1}},
    }
    assert selection_notices(quiet) == []  # two thirds flagged is the intended operating point
    loud = {
        "judging": {
            "final": {"negative": 5, "false_negative": 90, "uncertain": 5},
            "stages": [{"model_report": {"notices": ["fn_risk risk: fell back to ..."]}}],
        },
        "selection": {
            "pairs": 10,
            "pairs_short": 3,
            "target": {"mined": 3, "synthetic": 1},
            "short_reasons": {"ranking_exhausted": 3, "backfill_off": 0},
        },
    }
    assert selection_notices(loud) == [
        "fn_risk risk: fell back to ...",
        "the judges flagged 95 of the 100 candidates they saw (95%): the negatives that remain come from far "
        "down the rankings",
        "3 of 10 pairs are short of 4 negatives (ranking_exhausted 3)",
    ]
    mined_only = {"recipe": {"mine": {"n_negatives": 5}}, "mining": {"pairs": 8, "short_pairs": 2}}
    assert selection_notices(mined_only) == [
        "2 of 8 pairs are short of 5 negatives (their rankings ran out of admissible candidates down to "
        "mine.backfill_depth)"
    ]
