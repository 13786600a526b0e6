"""The miner's own guarantees, on crafted embeddings: exclusions hold whatever the sampler does."""

from __future__ import annotations

import numpy as np

from synth.index import Searcher
from synth.mine import _Exclusions, build_pairs, excluded_rows_per_query, mine
from synth.recipe import MineConfig
from synth.core.records import Corpus, Queries, SourceData


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _data():
    corpus = Corpus(ids=[f"d{i}" for i in range(40)], texts=[f"passage {i}" for i in range(40)])
    corpus.texts[5] = "What  causes LIFT?"  # equals query q0 after normalisation
    queries = Queries(
        ids=["q0", "q1", "q2"],
        texts=["what causes lift?", "Obesity lowers life quality.", "obesity  lowers life quality."],
    )
    qrels = {"q0": {"d1": 1}, "q1": {"d2": 1}, "q2": {"d3": 1, "d4": 2}}
    return SourceData(corpus, queries, qrels)


def test_excluded_rows_cover_positives_same_text_queries_and_query_text():
    excl = excluded_rows_per_query(_data(), exclude_query_text=True)
    assert excl[0].tolist() == [1, 5]
    # q1 and q2 share a text: one information need, so each excludes the other's positives.
    assert excl[1].tolist() == excl[2].tolist() == [2, 3, 4]
    assert excluded_rows_per_query(_data(), exclude_query_text=False)[0].tolist() == [1]


def test_topk_never_returns_an_excluded_row_even_when_they_rank_first():
    data = _data()
    rng = np.random.default_rng(0)
    corpus_emb = _unit(rng.normal(size=(40, 8)))
    query_emb = _unit(np.stack([corpus_emb[[1, 5]].mean(0), corpus_emb[[2, 3]].mean(0), corpus_emb[[3, 4]].mean(0)]))
    corpus_emb[5] = query_emb[0]  # the query-text duplicate ranks first
    pairs = build_pairs(data)
    cfg = MineConfig(n_negatives=5, sampler={"kind": "topk", "range_max": 40})
    searcher = Searcher(corpus_emb, "Flat", "cosine", "cpu", 1, 1, 1, 0, 1e12)
    mined, stats = mine(data, pairs, corpus_emb, query_emb, searcher, cfg, query_block=2, seed=0)
    excl = excluded_rows_per_query(data, True)
    for i, qrow in enumerate(pairs.query_rows):
        assert not set(mined.negative_rows[i]) & set(excl[int(qrow)].tolist())
        ranked = np.argsort(-(corpus_emb @ query_emb[qrow]))
        expected = [r for r in ranked if r not in excl[int(qrow)]][:5]
        assert mined.negative_rows[i].tolist() == expected  # and it is still the true top 5
    assert stats.short_pairs == 0


def test_exclusion_check_paths_agree():
    rng = np.random.default_rng(1)
    rows = rng.integers(-1, 500, size=(64, 100))
    short = [rng.choice(500, size=rng.integers(0, 10), replace=False) for _ in range(64)]
    long = [rng.choice(500, size=rng.integers(33, 80), replace=False) for _ in range(64)]
    for excl in (short, long):
        expected = np.array([[r >= 0 and r in set(e.tolist()) for r in line] for line, e in zip(rows, excl)])
        np.testing.assert_array_equal(_Exclusions(excl, 500).hits(rows), expected)
