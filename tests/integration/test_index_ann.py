"""Approximate indexes on real embeddings (SciFact passages and claims, the bundled MiniLM): the exact
re-ranking lifts recall, the calibration reaches index.target_recall from a deliberately small nprobe,
and the built index (what a remote engine serialises) carries the calibrated parameters."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.index import Searcher
from synth.report.run import IndexInfo
from synth.recipe import IndexConfig
from tests.conftest import shared_dataset

# Encodes SciFact's first 2,048 passages and the other train positives (2,340) and 512 claims with the bundled
# MiniLM: minutes on 2 busy cores, unless test_scifact.py's run already put that corpus in the session's
# embedding cache (CI runs the two modules on one worker, that run first: tests/support/schedule.py), when only
# the claims are encoded.
pytestmark = pytest.mark.slow

PASSAGES, CLAIMS = 2048, 512


@pytest.fixture(scope="module")
def scifact_vectors(cache_dir, scifact_head):
    """(passage vectors [2048, 384], claim vectors [512, 384]): the corpus's first passages and the first
    claims of queries.jsonl, normalised. The passages are encoded as ``synth run recipes/resa2.yaml`` on the
    SciFact cut in test_scifact.py encodes them (the BEIR loader's texts, the recipe's cache chunks, 128 tokens),
    so the cache's full matrix serves both; the tests read its first 2,048 rows (their figures are for that
    size)."""
    from synth.embed import BUNDLED_MODEL, Encoder, embed_texts
    from synth.formats.beir import BeirSource
    from synth.recipe import EmbedConfig
    from synth.sources import load_source

    root = shared_dataset("scifact")
    passages = load_source(BeirSource(path=str(scifact_head), split="train")).corpus.texts
    with open(root / "queries.jsonl", encoding="utf-8") as f:
        claims = [r["text"] for r in map(json.loads, f)][:CLAIMS]
    cfg = EmbedConfig()
    enc = Encoder(BUNDLED_MODEL, 128, cfg.batch_size, True, "cpu")
    corpus = embed_texts(enc, passages, cfg.passage_prompt, cache_dir, cfg.chunk_rows)
    return np.ascontiguousarray(corpus[:PASSAGES]), embed_texts(enc, claims, "", cache_dir, 512)


def _searcher(corpus, factory: str, **cfg) -> Searcher:
    return Searcher.from_config(IndexConfig(factory=factory, **cfg), corpus, 0, top_n=5)


def _exact(corpus, queries, k):
    import faiss

    return faiss.knn(np.ascontiguousarray(queries), corpus, k, metric=faiss.METRIC_INNER_PRODUCT)


def test_exact_reranking_beats_the_unrefined_index(scifact_vectors):
    corpus, queries = scifact_vectors
    # every list probed: what is left is the 4-bit codes' ranking error, which the re-ranking removes
    plain = _searcher(corpus, "IVF32,SQ4", nprobe=32, target_recall=None)
    refined = _searcher(corpus, "IVF32,SQ4,Refine(Flat)", nprobe=32, target_recall=None, refine_factor=4)
    _, plain_scores, _ = next(plain.search(queries, 20, 4096))
    _, scores, rows = next(refined.search(queries, 20, 4096))
    assert plain.info.recall_at_k < 0.95 and refined.info.recall_at_k >= 0.99, (plain.info, refined.info)
    assert refined.info.recall_at_n >= plain.info.recall_at_n
    # the refined scores are the exact inner products (the unrefined ones are the codes')
    exact = np.einsum("qd,qkd->qk", np.asarray(queries), np.asarray(corpus)[rows])
    assert np.abs(scores - exact).max() < 1e-5
    assert np.abs(plain_scores[:, 0] - _exact(corpus, queries, 1)[0][:, 0]).max() > 1e-3


def test_calibration_raises_a_small_nprobe_until_the_target_recall(scifact_vectors):
    import faiss

    corpus, queries = scifact_vectors
    low = _searcher(corpus, "IVF32,SQ8,Refine(Flat)", nprobe=1, target_recall=None)
    low.calibrate(queries, 20)
    s = _searcher(corpus, "IVF32,SQ8,Refine(Flat)", nprobe=1, target_recall=0.99, recall_sample=500)
    lists = [r for _, _, r in s.search(queries, 20, 256)]
    info = IndexInfo.model_validate(s.info.as_dict())
    assert low.info.recall_at_k < 0.9 and low.info.nprobe == 1
    assert info.recall == "sampled" and info.recall_queries == 500 and info.recall_k == 20 and info.recall_n == 5
    assert info.recall_at_k >= 0.99 and 1 < info.nprobe <= 32 and info.target_recall == 0.99
    # the whole query set, not only the sample, gets lists close to exact
    _, exact_rows = _exact(corpus, queries, 20)
    rows = np.concatenate(lists)
    overall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(rows.tolist(), exact_rows.tolist())])
    assert overall >= 0.97, overall
    # what a remote engine searches: faiss.serialize_index of _index keeps nprobe and the shortlist factor
    copy = faiss.deserialize_index(faiss.serialize_index(s._index))
    assert faiss.try_extract_index_ivf(copy).nprobe == info.nprobe and copy.k_factor == info.refine_factor
    _, copy_rows = copy.search(np.ascontiguousarray(queries[:256]), 20)
    from synth.index import order_ties

    assert np.array_equal(order_ties(*copy.search(np.ascontiguousarray(queries[:256]), 20))[1], lists[0])
    assert copy_rows.shape == (256, 20)


def test_hnsw_calibrates_ef_search(scifact_vectors):
    corpus, queries = scifact_vectors
    s = _searcher(corpus, "HNSW16,SQ8,Refine(Flat)", ef_search=4, target_recall=0.99, recall_sample=300)
    s.calibrate(queries, 50)
    assert s.info.recall_at_k >= 0.99 and s.info.ef_search > 4 and s.info.nprobe is None
