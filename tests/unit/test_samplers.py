"""Sampler behaviour on tiny hand-built corpora: exclusions, scores, short pools, seeding, block
independence, and each sampler's defining property."""

from __future__ import annotations

import numpy as np
import pytest

from synth.core.records import Corpus, Queries
from synth.samplers import build_sampler, sampler_kinds
from synth.core.seeding import stable_key
from synth.samplers.base import MiningContext, PairBlock
from synth.samplers.bm25 import BM25Config, PassageBM25Config
from synth.samplers.cluster import ClusterConfig
from synth.samplers.filters import AbsFilter, MarginFilter, PercFilter, keep_mask
from synth.samplers.random import RandomConfig
from synth.samplers.resa2 import ReSa2Config
from synth.samplers.simans import SimANSConfig, kernel_log_weights
from synth.samplers.topk import TopKConfig
from synth.samplers.trisampler import TriSamplerConfig

# Small settings so that every sampler has a meaningful pool on a 60-document corpus.
CONFIGS = {
    "topk": TopKConfig(range_min=2, range_max=20),
    "random": RandomConfig(),
    "bm25": BM25Config(depth=30, pick="random", stopwords=None),
    "passage_bm25": PassageBM25Config(depth=30, pick="random", stopwords=None),
    "simans": SimANSConfig(depth=30, score_scale=10.0),
    "trisampler": TriSamplerConfig(depth=40, max_angle_deg=90.0, positive_side=False),
    "cluster": ClusterConfig(depth=30),
    "resa2": ReSa2Config(k1=40, k1_prime=25, k2=10),
}
# Samplers whose picks depend on the seed (topk picks the best of its window).
SEEDED = {"random", "bm25", "passage_bm25", "simans", "trisampler", "resa2"}
WORDS = [f"w{i}" for i in range(40)]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def make_context(seed: int = 0, n_docs: int = 60, n_queries: int = 6, dim: int = 16, filters=()):
    """A random unit-vector corpus; each query sits near its 1-3 positives; doc 7 repeats query 0's
    text (a query-text duplicate) and is embedded right next to it so it ranks high."""
    rng = np.random.default_rng(seed)
    corpus_emb = _unit(rng.normal(size=(n_docs, dim)))
    qrels, query_emb = {}, []
    for q in range(n_queries):
        positives = rng.choice(np.arange(10, n_docs), size=1 + q % 3, replace=False)
        qrels[q] = sorted(int(p) for p in positives)
        query_emb.append(corpus_emb[positives].mean(axis=0) + 0.6 * rng.normal(size=dim))
    query_emb = _unit(np.array(query_emb))
    corpus_emb[7] = _unit(query_emb[0] + 0.05 * rng.normal(size=dim))
    doc_texts = [" ".join(rng.choice(WORDS, size=8)) for _ in range(n_docs)]
    query_texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n_queries)]
    doc_texts[7] = query_texts[0]
    ctx = MiningContext(
        corpus=Corpus(ids=[f"d{i}" for i in range(n_docs)], texts=doc_texts),
        queries=Queries(ids=[f"q{i}" for i in range(n_queries)], texts=query_texts),
        corpus_emb=corpus_emb,
        query_emb=query_emb,
        seed=13,
        filters=list(filters),
    )
    return ctx, qrels


def all_pairs(qrels) -> list[tuple[int, int]]:
    return [(q, p) for q in sorted(qrels) for p in qrels[q]]


def make_block(ctx: MiningContext, qrels, pairs, depth: int) -> PairBlock:
    """What the miner hands a sampler: raw dense ranks with excluded / filtered candidates masked."""
    size = len(ctx.corpus.ids)
    all_scores = ctx.query_emb @ ctx.corpus_emb.T
    fields = {k: [] for k in ("rows", "scores", "excluded", "pos", "anchor", "max")}
    for q, p in pairs:
        s = all_scores[q]
        positives = np.array(qrels[q], dtype=np.int64)
        duplicates = [d for d in range(size) if ctx.corpus.texts[d] == ctx.queries.texts[q]]
        excluded = np.union1d(positives, np.array(duplicates, dtype=np.int64))
        order = np.argsort(-s, kind="stable")[:depth]
        rows, scores = np.full(depth, -1, dtype=np.int64), np.full(depth, -np.inf, dtype=np.float32)
        rows[: len(order)], scores[: len(order)] = order, s[order]
        anchor = np.float32(s[positives].min())
        drop = np.isin(rows, excluded) | ~keep_mask(ctx.filters, scores[None, :], np.array([anchor]))[0]
        rows[drop], scores[drop] = -1, -np.inf
        for key, value in zip(fields, (rows, scores, excluded, s[p], anchor, s[positives].max())):
            fields[key].append(value)
    return PairBlock(
        query_ids=[ctx.queries.ids[q] for q, _ in pairs],
        positive_ids=[ctx.corpus.ids[p] for _, p in pairs],
        pair_keys=np.array([stable_key(ctx.queries.ids[q], ctx.corpus.ids[p]) for q, p in pairs], dtype=np.uint64),
        query_keys=np.array([stable_key(ctx.queries.ids[q]) for q, _ in pairs], dtype=np.uint64),
        query_rows=np.array([q for q, _ in pairs], dtype=np.int64),
        positive_rows=np.array([p for _, p in pairs], dtype=np.int64),
        all_positive_rows=[np.array(qrels[q], dtype=np.int64) for q, _ in pairs],
        excluded_rows=fields["excluded"],
        positive_score=np.array(fields["pos"], dtype=np.float32),
        anchor_score=np.array(fields["anchor"], dtype=np.float32),
        max_positive_score=np.array(fields["max"], dtype=np.float32),
        cand_rows=np.array(fields["rows"]).reshape(len(pairs), depth),
        cand_scores=np.array(fields["scores"]).reshape(len(pairs), depth),
    )


def run(kind_or_config, n: int, ctx=None, qrels=None, pairs=None):
    if ctx is None:
        ctx, qrels = make_context()
    config = CONFIGS[kind_or_config] if isinstance(kind_or_config, str) else kind_or_config
    sampler = build_sampler(config)
    pairs = all_pairs(qrels) if pairs is None else pairs
    block = make_block(ctx, qrels, pairs, sampler.candidate_depth(len(ctx.corpus.ids)))
    return sampler.sample(block, n, ctx), block, ctx


# ---------------------------------------------------------------------------------------------
# Every registered sampler
# ---------------------------------------------------------------------------------------------


def test_every_registered_kind_is_tested():
    assert set(sampler_kinds()) == set(CONFIGS)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_never_returns_an_excluded_row_nor_a_duplicate(kind):
    picks, block, ctx = run(kind, n=8)
    assert picks.rows.shape == (len(block), 8)
    assert (picks.rows >= 0).any()
    assert 7 in np.concatenate(block.excluded_rows)  # the query-text duplicate is in play
    for i, rows in enumerate(picks.rows):
        got = rows[rows >= 0]
        assert not np.isin(got, block.excluded_rows[i]).any()
        assert not np.isin(got, block.all_positive_rows[i]).any()
        assert len(set(got.tolist())) == len(got)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_scores_are_the_dense_scores_of_the_rows(kind):
    picks, block, ctx = run(kind, n=6)
    assert picks.scores.dtype == np.float32
    picked = picks.rows >= 0
    q = ctx.query_emb[block.query_rows]
    d = ctx.corpus_emb[np.maximum(picks.rows, 0)]
    expected = np.einsum("bd,bnd->bn", q, d)
    np.testing.assert_allclose(picks.scores[picked], expected[picked], atol=1e-5)
    assert np.isnan(picks.scores[~picked]).all()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_n_larger_than_the_corpus_leaves_trailing_minus_one(kind):
    ctx, qrels = make_context(n_docs=30)
    picks, block, _ = run(kind, n=45, ctx=ctx, qrels=qrels)
    assert picks.rows.shape == (len(block), 45)
    for i, rows in enumerate(picks.rows):
        filled = int((rows >= 0).sum())
        assert 0 < filled <= 30 - len(block.excluded_rows[i])
        assert (rows[filled:] == -1).all()  # the short slots are at the end


def test_random_with_n_above_the_corpus_returns_every_admissible_row():
    ctx, qrels = make_context(n_docs=30)
    picks, block, _ = run("random", n=45, ctx=ctx, qrels=qrels)
    for i, rows in enumerate(picks.rows):
        admissible = set(range(30)) - set(block.excluded_rows[i].tolist())
        assert set(rows[rows >= 0].tolist()) == admissible


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_same_seed_same_picks_other_seed_other_picks(kind):
    ctx, qrels = make_context()
    first, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels)
    again, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels)
    np.testing.assert_array_equal(first.rows, again.rows)
    ctx.seed += 1
    other, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels)
    if kind in SEEDED:
        assert not np.array_equal(first.rows, other.rows)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_pair_gets_the_same_picks_alone_or_inside_a_block(kind):
    ctx, qrels = make_context()
    pairs = all_pairs(qrels)
    together, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels, pairs=pairs)
    backwards, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels, pairs=pairs[::-1])
    np.testing.assert_array_equal(backwards.rows[::-1], together.rows)
    for i, pair in enumerate(pairs):
        alone, _, _ = run(kind, n=5, ctx=ctx, qrels=qrels, pairs=[pair])
        np.testing.assert_array_equal(alone.rows[0], together.rows[i])


@pytest.mark.parametrize("kind", ["random", "bm25", "passage_bm25"])
def test_samplers_drawing_outside_the_pool_apply_the_filters(kind):
    ctx, qrels = make_context(filters=[AbsFilter(tau=0.1)])
    picks, _, _ = run(kind, n=10, ctx=ctx, qrels=qrels)
    assert (picks.rows >= 0).sum() > 0
    assert np.nanmax(picks.scores) <= 0.1


# ---------------------------------------------------------------------------------------------
# Per-sampler properties
# ---------------------------------------------------------------------------------------------


def test_topk_window_counts_raw_ranks_positives_included():
    ctx, qrels = make_context()
    q, p = 1, qrels[1][0]
    ctx.query_emb[q] = ctx.corpus_emb[p]  # the positive is raw rank 0
    picks, block, _ = run(TopKConfig(range_min=2, range_max=6), n=4, ctx=ctx, qrels=qrels, pairs=[(q, p)])
    raw = np.argsort(-(ctx.corpus_emb @ ctx.query_emb[q]), kind="stable")
    assert raw[0] == p
    expected = [r for r in raw[2:6] if r not in qrels[q]]
    assert picks.rows[0, : len(expected)].tolist() == expected  # raw rank 2 first, not survivor rank 2


def _simans_block(scores: np.ndarray, positive_score: float) -> PairBlock:
    k = len(scores)
    return PairBlock(
        query_ids=["q"],
        positive_ids=["p"],
        pair_keys=np.array([stable_key("q", "p")], dtype=np.uint64),
        query_keys=np.array([stable_key("q")], dtype=np.uint64),
        query_rows=np.array([0]),
        positive_rows=np.array([k]),
        all_positive_rows=[np.array([k])],
        excluded_rows=[np.array([k])],
        positive_score=np.array([positive_score], dtype=np.float32),
        anchor_score=np.array([positive_score], dtype=np.float32),
        max_positive_score=np.array([positive_score], dtype=np.float32),
        cand_rows=np.arange(k, dtype=np.int64)[None, :],
        cand_scores=scores.astype(np.float32)[None, :],
    )


def test_simans_kernel_peaks_at_positive_score_plus_b():
    grid = np.linspace(-1.0, 1.0, 2001)[None, :]
    for b in (0.0, 0.2, -0.3):
        log_w = kernel_log_weights(grid, np.array([0.4]), a=0.5, b=b, scale=1.0)
        assert grid[0, np.argmax(log_w)] == pytest.approx(0.4 + b, abs=1e-3)
    # With a scale c the peak sits where c·s⁻ = c·s⁺ + b.
    log_w = kernel_log_weights(grid, np.array([0.4]), a=0.5, b=3.0, scale=30.0)
    assert grid[0, np.argmax(log_w)] == pytest.approx(0.5, abs=1e-3)
    assert kernel_log_weights(np.array([[-np.inf]]), np.array([0.4]), a=0.0, b=0.0, scale=1.0)[0, 0] == -np.inf


def test_simans_most_frequent_pick_is_nearest_positive_plus_b():
    scores = np.linspace(-0.2, 0.9, 23)  # steps of 0.05
    block = _simans_block(scores, positive_score=0.5)
    sampler = build_sampler(SimANSConfig(depth=23, a=0.5, b=4.5, score_scale=30.0))  # peak at 0.65
    counts = np.zeros(23, dtype=int)
    for seed in range(400):
        ctx = MiningContext(corpus=None, queries=None, corpus_emb=None, query_emb=None, seed=seed)
        counts[sampler.sample(block, 1, ctx).rows[0, 0]] += 1
    assert scores[np.argmax(counts)] == pytest.approx(0.65)
    assert counts[np.abs(scores - 0.65) > 0.2].sum() < 20  # the far tails are rarely drawn


def test_resa2_stage2_keeps_the_most_positive_like_candidates():
    rng = np.random.default_rng(3)
    dim, n_docs = 16, 50
    positive = _unit(rng.normal(size=dim))
    corpus = _unit(rng.normal(size=(n_docs, dim)))
    corpus[0] = positive
    twins = [11, 22, 33, 44]  # almost the positive
    corpus[twins] = _unit(positive + 0.05 * rng.normal(size=(4, dim)))
    query = _unit(positive + 1.5 * rng.normal(size=dim))
    ctx = MiningContext(
        corpus=Corpus(ids=[f"d{i}" for i in range(n_docs)], texts=[f"t{i}" for i in range(n_docs)]),
        queries=Queries(ids=["q0"], texts=["query"]),
        corpus_emb=corpus,
        query_emb=query[None, :],
        seed=5,
    )
    qrels = {0: [0]}
    config = ReSa2Config(k1=n_docs, k1_prime=n_docs, k2=4, kernel=0.25)  # S1 = the whole pool
    for seed in range(10):
        ctx.seed = seed
        picks, _, _ = run(config, n=3, ctx=ctx, qrels=qrels)
        assert set(picks.rows[0].tolist()) <= set(twins)
        assert 0 not in picks.rows[0]


def test_resa2_stage1_centres_on_the_best_positive_score():
    """A pair whose own positive scores 0.1 still samples around the query's best positive (0.9)."""
    rng = np.random.default_rng(0)
    high, low = np.linspace(0.85, 0.9, 10), np.linspace(0.1, 0.15, 10)
    block = _simans_block(np.concatenate([low, high]), positive_score=0.1)
    block.max_positive_score[:] = 0.9
    ctx = MiningContext(corpus=None, queries=None, corpus_emb=_unit(rng.normal(size=(21, 8))), query_emb=None, seed=0)
    sampler = build_sampler(ReSa2Config(k1=20, k1_prime=3, k2=3, score_scale=30.0, positive="each"))
    for seed in range(20):
        ctx.seed = seed
        assert (sampler.sample(block, 3, ctx).rows >= 10).all()


def test_resa2_never_returns_a_positive_and_random_anchor_shares_negatives():
    ctx, qrels = make_context()
    q = next(q for q in qrels if len(qrels[q]) == 3)
    pairs = [(q, p) for p in qrels[q]]
    for p in qrels[q]:  # pull the positives into the top ranks
        ctx.corpus_emb[p] = _unit(ctx.query_emb[q] + 0.1 * ctx.corpus_emb[p])
    picks, block, _ = run("resa2", n=5, ctx=ctx, qrels=qrels, pairs=pairs)
    assert np.isin(block.cand_rows[:, :3], -1).all()  # the positives were there, and masked
    assert not np.isin(picks.rows, qrels[q]).any()
    assert (picks.rows == picks.rows[0]).all()  # every pair of the query: the same negatives
    anchors = build_sampler(CONFIGS["resa2"]).anchor_positives(block, ctx)
    assert len(set(anchors.tolist())) == 1 and anchors[0] in qrels[q]
    each, _, _ = run(ReSa2Config(k1=40, k1_prime=25, k2=10, positive="each"), n=5, ctx=ctx, qrels=qrels, pairs=pairs)
    assert not np.isin(each.rows, qrels[q]).any()
    assert not (each.rows == each.rows[0]).all()


def test_trisampler_only_returns_candidates_inside_the_region():
    ctx, qrels = make_context(n_docs=200)
    config = TriSamplerConfig(depth=150, max_angle_deg=20.0, positive_side=True)
    picks, block, _ = run(config, n=10, ctx=ctx, qrels=qrels)
    sampler = build_sampler(config)
    inside = np.isfinite(sampler.region_log_weights(block, ctx))
    assert (~inside & (block.cand_rows[:, :150] >= 0)).any()  # the criterion does reject candidates
    assert (picks.rows >= 0).sum() > 0
    for i, rows in enumerate(picks.rows):
        q, p = ctx.query_emb[block.query_rows[i]], ctx.corpus_emb[block.positive_rows[i]]
        for r in rows[rows >= 0]:
            d = ctx.corpus_emb[r]
            gap = np.degrees(abs(np.arccos(np.clip(q @ p, -1, 1)) - np.arccos(np.clip(q @ d, -1, 1))))
            assert gap <= 20.0 + 1e-4
            assert p @ d > q @ d


def test_cluster_picks_one_candidate_per_well_separated_cluster():
    rng = np.random.default_rng(1)
    dim, per = 16, 8
    centers = np.eye(dim)[:5] * 0.7 + 0.3 * _unit(np.ones(dim))  # 5 distinct directions
    docs = [_unit(c + 0.03 * rng.normal(size=(per, dim))) for c in centers]
    corpus = np.concatenate(docs + [_unit(-np.ones((1, dim)))]).astype(np.float32)  # last doc: positive
    label = np.repeat(np.arange(5), per)
    n_docs = len(corpus)
    ctx = MiningContext(
        corpus=Corpus(ids=[f"d{i}" for i in range(n_docs)], texts=[f"t{i}" for i in range(n_docs)]),
        queries=Queries(ids=["q0"], texts=["query"]),
        corpus_emb=corpus,
        query_emb=_unit(np.ones((1, dim))),
        seed=0,
    )
    qrels = {0: [n_docs - 1]}
    for seed in range(5):
        ctx.seed = seed
        picks, block, _ = run(ClusterConfig(depth=n_docs), n=5, ctx=ctx, qrels=qrels)
        rows = picks.rows[0]
        assert sorted(label[rows].tolist()) == [0, 1, 2, 3, 4]
        scores = corpus[: 5 * per] @ ctx.query_emb[0]
        for r in rows:  # each pick is the best of its cluster
            assert scores[r] == scores[label == label[r]].max()
        assert (np.diff(picks.scores[0]) <= 0).all()  # best first


def test_bm25_candidates_share_a_term_with_the_query_text():
    ctx, qrels = make_context()
    config = BM25Config(depth=60, pick="top", stopwords=None)
    picks, block, _ = run(config, n=60, ctx=ctx, qrels=qrels)
    index = next(iter(ctx.cache["bm25"].values()))
    for i, rows in enumerate(picks.rows):
        terms = set(ctx.queries.texts[block.query_rows[i]].split())
        got = rows[rows >= 0]
        assert all(terms & set(ctx.corpus.texts[r].split()) for r in got)
        sharing = {d for d, t in enumerate(ctx.corpus.texts) if terms & set(t.split())}
        assert set(got.tolist()) == sharing - set(block.excluded_rows[i].tolist())
    run(config, n=3, ctx=ctx, qrels=qrels)
    assert next(iter(ctx.cache["bm25"].values())) is index  # built once per run


def test_passage_bm25_queries_with_the_positive_text():
    ctx, qrels = make_context()
    config = PassageBM25Config(depth=60, pick="top", stopwords=None)
    picks, block, _ = run(config, n=60, ctx=ctx, qrels=qrels)
    for i, rows in enumerate(picks.rows):
        terms = set(ctx.corpus.texts[block.positive_rows[i]].split())
        sharing = {d for d, t in enumerate(ctx.corpus.texts) if terms & set(t.split())}
        assert set(rows[rows >= 0].tolist()) == sharing - set(block.excluded_rows[i].tolist())


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def test_perc_filter_stays_below_a_negative_positive_score():
    anchor = np.array([-0.2, 0.8], dtype=np.float32)
    threshold = PercFilter(p=0.9).threshold(anchor)
    assert threshold[0] < -0.2 and threshold[0] == pytest.approx(-0.22)
    assert threshold[1] == pytest.approx(0.72)
    keep = keep_mask([PercFilter(p=0.9)], np.array([[-0.21, -0.25], [0.7, 0.75]], dtype=np.float32), anchor)
    assert keep.tolist() == [[False, True], [True, False]]


def test_margin_and_abs_filters():
    anchor = np.array([0.6], dtype=np.float32)
    scores = np.array([[0.3, 0.5, 0.56, 0.59]], dtype=np.float32)
    assert keep_mask([MarginFilter(m=0.05)], scores, anchor).tolist() == [[True, True, False, False]]
    assert keep_mask([AbsFilter(tau=0.4)], scores, anchor).tolist() == [[True, False, False, False]]
    both = keep_mask([MarginFilter(m=0.02), AbsFilter(tau=0.52)], scores, anchor)
    assert both.tolist() == [[True, True, False, False]]


def test_resa2_gemm_and_gather_paths_agree(monkeypatch):
    import synth.samplers.resa2 as resa2

    ctx, qrels = make_context(n_docs=60)
    block = make_block(ctx, qrels, all_pairs(qrels), depth=40)
    config = ReSa2Config(k1=40, k1_prime=20, k2=5)
    gemm = build_sampler(config).sample(block, 3, ctx)
    monkeypatch.setattr(resa2, "_GEMM_RATIO", 0)  # force the per-pair gather path
    gather = build_sampler(config).sample(block, 3, ctx)
    np.testing.assert_array_equal(gemm.rows, gather.rows)
