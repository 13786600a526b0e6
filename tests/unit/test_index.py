"""``index.factory: auto`` and the recall report, on sizes and small crafted vectors (no model, no big data)."""

from __future__ import annotations

import numpy as np
import pytest

from synth.index import Searcher, _recall, _recall_queries
from synth.index_factory import FLAT_MAX_VECTORS, choose_factory
from synth.report.run import IndexInfo

GB = 2**30


@pytest.mark.parametrize("budget_gb", [0.001, 1, 1000])
def test_auto_stays_flat_below_a_million_vectors_whatever_the_budget(budget_gb):
    assert choose_factory(FLAT_MAX_VECTORS - 1, 384, budget_gb * GB) == "Flat"
    assert choose_factory(FLAT_MAX_VECTORS - 1, 384, budget_gb * GB, n_queries=10**7) == "Flat"


@pytest.mark.parametrize(
    "n, budget_gb, n_queries, expected",
    [
        # float vectors (1.43 GiB) + SQ8 codes fit: IVF over 1-byte codes, re-ranked from the float vectors
        (1_000_000, 8, None, "IVF1024,SQ8,Refine(Flat)"),
        (1_000_000, 8, 50_000, "IVF1024,SQ8,Refine(Flat)"),
        # many queries per document: the graph's build cost is paid back
        (1_000_000, 8, 250_000, "HNSW32,SQ8,Refine(Flat)"),
        (1_000_000, 1.9, 250_000, "IVF1024,SQ8,Refine(Flat)"),  # no room for the graph's links
        # the float vectors do not fit: re-ranked from fp16 copies, then from 1-byte codes
        (1_000_000, 1.3, None, "IVF1024,SQ8,Refine(SQfp16)"),
        (1_000_000, 0.5, None, "IVF1024,PQ48,Refine(SQ8)"),
        # more vectors, more lists (~sqrt(n), a power of 2)
        (10_000_000, 64, None, "IVF4096,SQ8,Refine(Flat)"),
        (10_000_000, 16, None, "IVF4096,SQ8,Refine(SQfp16)"),
        (100_000_000, 1000, None, "IVF8192,SQ8,Refine(Flat)"),
    ],
)
def test_auto_above_a_million_picks_by_memory_and_queries(n, budget_gb, n_queries, expected):
    assert choose_factory(n, 384, budget_gb * GB, n_queries) == expected


@pytest.mark.parametrize("d", [384, 768, 1024, 100])
def test_every_auto_choice_is_a_refined_index_faiss_builds(d):
    faiss = pytest.importorskip("faiss")
    for budget_gb in (0.01, d / 384 * 1.3, 1000):
        for n_queries in (None, 10**7):
            factory = choose_factory(2_000_000, d, budget_gb * GB, n_queries)
            assert "Refine(" in factory
            index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
            assert isinstance(index, faiss.IndexRefine)


def _unit(x):
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def test_the_recall_sample_depends_on_the_query_vectors_not_their_order():
    q = _unit(np.random.default_rng(0).normal(size=(300, 8)))
    perm = np.random.default_rng(1).permutation(300)
    a, b = _recall_queries(q, 50, 0), _recall_queries(q[perm], 50, 0)
    assert len(a) == 50 and sorted(map(bytes, a)) == sorted(map(bytes, b))
    assert sorted(map(bytes, _recall_queries(q, 50, 1))) != sorted(map(bytes, a))  # the seed matters
    assert len(_recall_queries(q, 1000, 0)) == 300


def test_recall_counts_a_tied_twin_as_found_and_a_missing_row_as_lost():
    corpus = _unit(np.asarray([[1, 0], [1, 0], [0, 1], [1, 1]], np.float32))  # rows 0 and 1 are twins
    q = _unit(np.asarray([[1, 0.01]], np.float32))
    kth = np.asarray([float(corpus[1] @ q[0])])  # exact top-2: rows 0, 1 (equal scores)
    assert _recall(q, corpus, np.asarray([[1, 0]]), kth) == 1.0
    assert _recall(q, corpus, np.asarray([[0, 3]]), kth) == 0.5
    assert _recall(q, corpus, np.asarray([[0, -1]]), kth) == 0.5


def test_report_keys_exact_for_flat_measured_for_an_approximate_index():
    rng = np.random.default_rng(0)
    corpus, queries = _unit(rng.normal(size=(2000, 16))), _unit(rng.normal(size=(200, 16)))
    flat = Searcher(corpus, "Flat", "cosine", "cpu", 1, 1, 1, 0, 1e12)
    list(flat.search(queries, 10, 64))
    info = IndexInfo.model_validate(flat.info.as_dict()).model_dump()
    assert info["recall"] == "exact" and info["recall_at_k"] == info["recall_at_n"] == 1.0
    assert info["recall_queries"] == 0 and info["nprobe"] is None and info["refine_factor"] is None

    ann = Searcher(corpus, "IVF16,SQ8,Refine(Flat)", "cosine", "cpu", 1, 64, 2000, 0, 1e12, target_recall=0.95)
    ann.top_n = 3
    list(ann.search(queries, 10, 64))
    info = IndexInfo.model_validate(ann.info.as_dict()).model_dump()
    assert info["recall"] == "sampled" and info["recall_k"] == 10 and info["recall_n"] == 3
    assert info["recall_queries"] == 200 and info["recall_at_k"] >= 0.95 and info["nprobe"] > 1
    assert info["refine_factor"] == 4.0 and info["target_recall"] == 0.95 and info["calibration_seconds"] > 0


def test_a_refine_from_smaller_codes_says_so():
    corpus = _unit(np.random.default_rng(0).normal(size=(2000, 16)))
    s = Searcher(corpus, "IVF16,SQ8,Refine(SQfp16)", "ip", "cpu", 4, 64, 2000, 0, 1e12, refine_factor=2)
    assert s.info.refine_factor == 2 and any("re-ranked from SQfp16 codes" in n for n in s.info.notes)


def test_auto_searches_exactly_when_the_target_recall_needs_most_of_the_lists():
    rng = np.random.default_rng(0)
    corpus, queries = _unit(rng.normal(size=(2000, 16))), _unit(rng.normal(size=(100, 16)))  # no cluster structure
    s = Searcher(corpus, "IVF16,SQ8,Refine(Flat)", "cosine", "cpu", 1, 64, 2000, 0, 1e12, target_recall=0.99)
    s._auto = True  # what factory: auto builds above 1M vectors, on a corpus a unit test can afford
    _, scores, rows = next(s.search(queries, 10, 100))
    _, flat_scores, flat_rows = next(
        Searcher(corpus, "Flat", "cosine", "cpu", 1, 1, 1, 0, 1e12).search(queries, 10, 100)
    )
    assert np.array_equal(rows, flat_rows) and np.array_equal(scores, flat_scores)
    assert s._index is None and s.info.factory == "Flat" and s.info.recall == "exact" and s.info.recall_at_k == 1.0
    assert any(n.startswith("auto: IVF16,SQ8,Refine(Flat) gave recall@10") for n in s.info.notes), s.info.notes
    IndexInfo.model_validate(s.info.as_dict())


def test_auto_device_without_any_gpu_node_is_cpu_and_leaves_torch_unloaded():
    """index.device auto asks torch only where a GPU could be: a warm run that embeds nothing never loads
    torch (1.5 s of its start)."""
    import subprocess
    import sys

    code = (
        "import sys; from synth.core.device import gpu_possible, resolve_device; "
        "print(gpu_possible(), resolve_device('auto'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    possible, device, loaded = out.stdout.split()
    if possible == "True":
        pytest.skip("this machine has a GPU driver or device node (or is not Linux): torch is asked")
    assert (device, loaded) == ("cpu", "False")
