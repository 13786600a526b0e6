"""The Ray engine against a local Ray cluster the tests start themselves (tests/support/ray_cluster.py): the
same rows as the local engine, the report's engine section, a worker killed mid-stage, and the engine's own
ordered pool and remote search. Every test that needs Ray is in this file, so under pytest-xdist
(``--dist loadfile``) one worker runs them all on one cluster (starting one costs ~10 s and ~1.5 GB)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tests.support.ray_cluster  # noqa: F401  (before ray: the test cluster's environment, loopback only)

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from datasets import load_from_disk  # noqa: E402

from synth.engine.config import RayEngineConfig  # noqa: E402
from synth.engine.ray_engine import RayEngine  # noqa: E402
from synth.engine.shards import merge_topk  # noqa: E402
from synth.index import Searcher, order_ties  # noqa: E402
from tests.support.ray_cluster import Dies, Echo, actor_processes, local_cluster  # noqa: E402
from tests.support.runs import MAIN_RECIPE, REPO, RESA2_RECIPE, run_synth, synth_env  # noqa: E402

CHUNK_ROWS = "embed.chunk_rows=300"  # the example's 1,200 passages in 4 chunks: work for 2 embedding actors


@pytest.fixture(scope="module")
def ray_address() -> str:
    with local_cluster() as address:
        yield address


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> Path:
    """resa2 on the local engine with the chunking the Ray runs use (embeddings depend on which texts are
    encoded together), from a cold cache of its own."""
    root = tmp_path_factory.mktemp("ray-ref")
    out = root / "local"
    run_synth(root / "cache", "run", str(RESA2_RECIPE), "--out", str(out), "--set", CHUNK_ROWS)
    return out


def assert_same_dataset(a: Path, b: Path) -> None:
    """Every config of ``a/dataset`` equals ``b/dataset``'s, row for row."""
    da, db = load_from_disk(str(a / "dataset")), load_from_disk(str(b / "dataset"))
    assert list(da) == list(db)
    for name in da:
        assert da[name].to_list() == db[name].to_list(), name


def test_map_actors_yields_in_item_order_from_several_actors(ray_address):
    engine = RayEngine(RayEngineConfig(address=ray_address, actors=3))
    try:
        items = list(range(12))
        out = list(engine.map_actors(Echo, {"delay": 0.2}, items, label="echo"))
        assert [item for item, _ in out] == items
        assert len({pid for _, pid in out}) == 3
        report = engine.report()
        assert report["stages"]["echo"] == {"tasks": 12, "workers": 3, "seconds": report["stages"]["echo"]["seconds"]}
        assert report["workers"] == 3 and report["cluster"]["cpus"] >= 8
    finally:
        engine.close()
    import ray

    assert ray.is_initialized()  # an engine that found Ray connected leaves the test cluster alone


def test_a_dead_worker_is_one_resumable_line_and_a_user_error_stays_one(ray_address):
    from synth.core.errors import ResumableFailure, UserError

    engine = RayEngine(RayEngineConfig(address=ray_address))
    try:
        with pytest.raises(ResumableFailure) as failure:
            list(engine.map_actors(Dies, {"fatal": 3, "refuse": -1}, list(range(6)), label="llm"))
        line = str(failure.value)
        assert "\n" not in line and line.startswith("ray: ") and "during llm" in line and "rerun" in line
        with pytest.raises(UserError, match=r"^item 2: refused$"):
            list(engine.map_actors(Dies, {"fatal": -1, "refuse": 2}, list(range(6)), label="llm"))
    finally:
        engine.close()


def _tied(n: int = 1200, d: int = 32):
    rng = np.random.default_rng(3)
    base = rng.standard_normal((n // 4, d)).astype(np.float32)
    corpus = np.ascontiguousarray(np.concatenate([base] * 4))  # every vector 4 times: ties across shards
    queries = np.ascontiguousarray(np.concatenate([base[:20], rng.standard_normal((60, d)).astype(np.float32)]))
    return corpus, queries


@pytest.mark.parametrize("shards", [1, 3])
def test_remote_search_over_the_memmap_equals_the_local_search(ray_address, tmp_path, shards):
    import faiss

    corpus, queries = _tied()
    np.save(tmp_path / "full.npy", corpus)
    memmap = np.load(tmp_path / "full.npy", mmap_mode="r")
    k, block = 30, 16
    if shards == 1:  # the whole corpus in each actor: the local search's own lists
        local = list(Searcher(memmap, "Flat", "ip", "cpu", 1, 16, 1000, 0, 1e12).search(queries, k, block))
        want_s, want_r = np.concatenate([p[1] for p in local]), np.concatenate([p[2] for p in local])
    else:  # corpus shards merged: the canonical exact top-k, ties at the cut included
        full_s, full_r = faiss.knn(queries, corpus, len(corpus), metric=faiss.METRIC_INNER_PRODUCT)
        want_s, want_r = merge_topk([order_ties(full_s, full_r)], k)
    engine = RayEngine(RayEngineConfig(address=ray_address, corpus_shards=shards))
    try:
        searcher = Searcher(memmap, "Flat", "ip", "cpu", 1, 16, 1000, 0, 1e12)
        searcher.remote = engine.searcher_remote(searcher)
        parts = list(searcher.search(queries, k, block))
        assert [p[0] for p in parts] == list(range(0, len(queries), block))
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), want_r)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), want_s)
        assert engine.report()["stages"]["search"]["tasks"] == len(parts) * shards
    finally:
        engine.close()


def test_corpus_shards_need_exact_search(ray_address):
    from synth.core.errors import UserError

    corpus, _ = _tied()
    engine = RayEngine(RayEngineConfig(address=ray_address, corpus_shards=2))
    searcher = Searcher(corpus, "HNSW16", "ip", "cpu", 1, 16, 1000, 0, 1e12)
    with pytest.raises(UserError, match="engine.corpus_shards"):
        engine.searcher_remote(searcher)


def test_resa2_on_ray_writes_the_local_rows(local_reference, tmp_path):
    # address 'local' (the default): the run starts its own loopback cluster and stops it
    out = tmp_path / "ray"
    t0 = time.perf_counter()
    run_synth(
        tmp_path / "cache", "run", str(RESA2_RECIPE), "--out", str(out), "--set", CHUNK_ROWS, "--set", "engine.kind=ray"
    )
    seconds = time.perf_counter() - t0
    assert_same_dataset(local_reference, out)
    engine = json.loads((out / "report.json").read_text())["engine"]
    assert engine["kind"] == "ray" and engine["address"] == "local"
    assert engine["workers"] >= 2
    assert engine["stages"]["embed"]["tasks"] == 5  # 4 corpus chunks + 1 query chunk, all cold
    assert engine["stages"]["embed"]["workers"] >= 2
    assert engine["stages"]["search"]["tasks"] >= 1
    assert set(engine["stage_seconds"]) >= {"load", "embed", "index", "mine", "write"}
    assert 0 < engine["start_seconds"] < seconds

    # exact search with the corpus split across two actors, on the now warm cache: the same rows
    sharded = tmp_path / "ray-sharded"
    run_synth(
        tmp_path / "cache", "run", str(RESA2_RECIPE), "--out", str(sharded),
        "--set", CHUNK_ROWS, "--set", "engine.kind=ray", "--set", "engine.corpus_shards=2",
    )  # fmt: skip
    assert_same_dataset(local_reference, sharded)
    engine = json.loads((sharded / "report.json").read_text())["engine"]
    assert "embed" not in engine["stages"]  # the cache keeps its meaning: nothing embedded again
    assert engine["stages"]["search"]["workers"] == 2


def test_main_job_on_ray_with_a_warm_cache_writes_the_local_rows(
    session_quickstart_run, cache_dir, ray_address, tmp_path
):
    # warm: nothing to embed and every LLM request answered by the cache, so the work is the search, each
    # query block on both halves of the corpus (2 actors) and the lists merged
    out = tmp_path / "main-ray"
    run_synth(
        cache_dir, "run", str(MAIN_RECIPE), "--out", str(out),
        "--set", "engine.kind=ray", "--set", f"engine.address={ray_address}", "--set", "engine.corpus_shards=2",
    )  # fmt: skip
    assert_same_dataset(session_quickstart_run, out)
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["kind"] == "ray" and report["engine"]["workers"] >= 2
    assert report["llm"]["requests_sent"] == 0  # the warm request cache answered every LLM request


def test_a_killed_embedding_worker_loses_no_row(local_reference, ray_address, tmp_path):
    cache = tmp_path / "cache"
    args = [
        sys.executable, "-m", "synth", "run", str(RESA2_RECIPE), "--out", str(tmp_path / "out"),
        "--set", CHUNK_ROWS, "--set", "engine.kind=ray", "--set", f"engine.address={ray_address}",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=synth_env(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        if list(cache.glob("embeddings/*/chunk-*.npy")):  # one chunk is on storage: the stage is under way
            for victim in actor_processes("EmbedActor"):
                victim.send_signal(signal.SIGKILL)
                killed = victim.pid
                break
        time.sleep(0.2)
    _, stderr = proc.communicate(timeout=900)
    assert killed is not None, "no embedding actor was running when the first chunk appeared"
    print(f"killed embedding worker {killed}: the run exited {proc.returncode}")  # 0: Ray restarted it and retried
    if proc.returncode != 0:  # failed: in one line, no traceback, and a rerun resumes
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        assert "Traceback" not in stderr, stderr[-2000:]
        assert "rerun" in lines[-1], stderr[-2000:]
        run_synth(cache, *args[3:])
    assert_same_dataset(local_reference, tmp_path / "out")
