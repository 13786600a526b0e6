"""The Ray engine against a local Ray cluster the tests start themselves (tests/support/ray_cluster.py): the
same rows as the local engine, the report's engine section, a worker killed mid-stage, the engine's own
ordered pool and remote search, and the waits that must end (issue 23: settings the cluster can never run
refused when it is reached, a stage where nothing finishes, ``auto`` on another job's busy cluster, SIGTERM
during a run; the bounds that need no cluster are in tests/integration/test_ray_bounds.py). Every test that needs Ray is in this file, so under pytest-xdist
(one work unit per module: tests/support/schedule.py) one worker runs them all on one cluster (starting one
costs ~10 s and ~1.5 GB)."""

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
from synth.core.errors import INTERRUPTED, ResumableFailure, UserError  # noqa: E402
from tests.support.ray_cluster import ECHO_DRIVER, Dies, Echo, Idle, actor_processes, local_cluster  # noqa: E402
from tests.conftest import EXAMPLE  # noqa: E402
from tests.support.runs import MAIN_RECIPE, REPO, RESA2_RECIPE, run_synth, synth_env  # noqa: E402
from tests.support.subsets import cut_beir  # noqa: E402

# The runs here embed from cold caches (that is what the workers are for), so they read a cut of the example:
# 200 passages in 4 chunks of 50 (work for 2 embedding actors) and the 20 queries whose positives they hold.


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> list[str]:
    """The ``--set`` arguments that point a run at the cut and chunk it."""
    cut = cut_beir(EXAMPLE, tmp_path_factory.mktemp("ray-example") / "beir", n_queries=20, n_docs=200)
    return ["--set", "embed.chunk_rows=50", "--set", f"source.path={cut}"]


@pytest.fixture(scope="module")
def ray_address() -> str:
    with local_cluster() as address:
        yield address


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, small_run) -> Path:
    """resa2 on the local engine, on the same cut and chunking as the Ray runs (embeddings depend on which texts
    are encoded together), from a cold cache of its own."""
    root = tmp_path_factory.mktemp("ray-ref")
    out = root / "local"
    run_synth(root / "cache", "run", str(RESA2_RECIPE), "--out", str(out), *small_run)
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
        searcher = Searcher(memmap, "Flat", "ip", "cpu", 1, 16, 1000, 0, 1e12, engine=engine)
        parts = list(searcher.search(queries, k, block))
        assert [p[0] for p in parts] == list(range(0, len(queries), block))
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), want_r)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), want_s)
        assert engine.report()["stages"]["search"]["tasks"] == len(parts) * shards
    finally:
        engine.close()


def test_corpus_shards_need_exact_search(ray_address):
    corpus, _ = _tied()
    engine = RayEngine(RayEngineConfig(address=ray_address, corpus_shards=2))
    searcher = Searcher(corpus, "HNSW16", "ip", "cpu", 1, 16, 1000, 0, 1e12)
    with pytest.raises(UserError, match="engine.corpus_shards"):
        engine.searcher_remote(searcher)


def test_resa2_on_ray_writes_the_local_rows(local_reference, small_run, tmp_path):
    # address 'local' (the default): the run starts its own loopback cluster and stops it
    out = tmp_path / "ray"
    t0 = time.perf_counter()
    run_synth(tmp_path / "cache", "run", str(RESA2_RECIPE), "--out", str(out), *small_run, "--set", "engine.kind=ray")
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
        *small_run, "--set", "engine.kind=ray", "--set", "engine.corpus_shards=2",
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


def communicate(proc: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """``proc.communicate`` within ``timeout``; past it the process is killed and the test fails with its stderr."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate(timeout=60)
        pytest.fail(f"{what}: still running after {timeout:.0f} s; its stderr ends:\n{(stderr or '')[-3000:]}")


def test_a_killed_embedding_worker_loses_no_row(local_reference, small_run, ray_address, tmp_path):
    # A killed actor is restarted once and its chunk retried once; should the replacement sit idle (seen on a
    # loaded 2-core CI machine), the stage stops after SYNTH_RAY_STALL_TIMEOUT in one line and a rerun resumes.
    cache = tmp_path / "cache"
    args = [
        sys.executable, "-m", "synth", "run", str(RESA2_RECIPE), "--out", str(tmp_path / "out"),
        *small_run, "--set", "engine.kind=ray", "--set", f"engine.address={ray_address}",
    ]  # fmt: skip
    env = {**synth_env(cache), "SYNTH_RAY_STALL_TIMEOUT": "180"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        if list(cache.glob("embeddings/*/chunk-*.npy")):  # one chunk is on storage: the stage is under way
            for victim in actor_processes("EmbedActor"):
                victim.send_signal(signal.SIGKILL)
                killed = victim.pid
                break
        time.sleep(0.2)
    _, stderr = communicate(proc, 900, "the run whose embedding worker was killed")
    assert killed is not None, "no embedding actor was running when the first chunk appeared"
    print(f"killed embedding worker {killed}: the run exited {proc.returncode}")  # 0: Ray restarted it and retried
    if proc.returncode != 0:  # failed: in one line, no traceback, and a rerun resumes
        lines = [line for line in stderr.strip().splitlines() if line.strip()]
        assert "Traceback" not in stderr, stderr[-2000:]
        assert proc.returncode == 3 and "rerun" in lines[-1], stderr[-2000:]
        run_synth(cache, *args[3:], timeout=900)
    assert_same_dataset(local_reference, tmp_path / "out")


# -- nothing waits without end (issue 23) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, field",
    [
        ({"actor_cpus": 64}, "engine.actor_cpus"),  # more than any node
        ({"actor_gpus": 2}, "engine.actor_gpus"),  # the test cluster has none
        ({"actors": 100}, "engine.actors"),  # 50 CPUs at once
        ({"corpus_shards": 4096}, "engine.corpus_shards"),  # every shard's actor at once
    ],
)
def test_settings_the_cluster_can_never_run_are_refused_when_it_is_reached(ray_address, setting, field):
    engine = RayEngine(RayEngineConfig(address=ray_address, **setting))
    try:
        with pytest.raises(UserError) as refused:
            engine.ray()
    finally:
        engine.close()
    line = str(refused.value)
    assert type(refused.value) is UserError and line.startswith(f"{field}: ") and "\n" not in line, line
    assert f"engine.address {ray_address!r}" in line and "CPUs" in line, line


def test_more_corpus_shards_than_rows_search_one_row_each(ray_address, caplog):
    import faiss

    rng = np.random.default_rng(5)
    corpus = rng.standard_normal((3, 8)).astype(np.float32)
    queries = rng.standard_normal((4, 8)).astype(np.float32)
    full_s, full_r = faiss.knn(queries, corpus, len(corpus), metric=faiss.METRIC_INNER_PRODUCT)
    want_s, want_r = merge_topk([order_ties(full_s, full_r)], 2)
    engine = RayEngine(RayEngineConfig(address=ray_address, corpus_shards=5))
    try:
        with caplog.at_level("WARNING", logger="synth.engine"):
            searcher = Searcher(corpus, "Flat", "ip", "cpu", 1, 16, 1000, 0, 1e12, engine=engine)
        assert "engine.corpus_shards: 5 shards for a corpus of 3 rows; searching with 3" in caplog.text
        parts = list(searcher.search(queries, 2, 16))
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), want_r)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), want_s)
        assert engine.report()["stages"]["search"]["workers"] == 3
    finally:
        engine.close()


def test_a_task_that_never_finishes_stops_its_stage_in_one_line(ray_address, monkeypatch):
    monkeypatch.setenv("SYNTH_RAY_STALL_TIMEOUT", "5")
    engine = RayEngine(RayEngineConfig(address=ray_address, actors=1))
    try:
        with pytest.raises(ResumableFailure) as stalled:
            list(engine.map_actors(Echo, {"delay": 3600}, [0], label="echo"))  # item 0 sleeps for an hour
    finally:
        engine.close()
    line = str(stalled.value)
    assert line.startswith("ray: nothing finished for ") and "during echo (0 tasks done; " in line, line
    assert "SYNTH_RAY_STALL_TIMEOUT=5 s" in line and "rerun to resume" in line and "\n" not in line, line


def test_auto_joining_a_busy_cluster_says_so_and_stops_when_its_actors_never_start(ray_address, tmp_path):
    import ray

    # another job holds all but a quarter CPU of the cluster: the run's 0.5-CPU actors can never start
    blocker = ray.remote(num_cpus=ray.cluster_resources()["CPU"] - 0.25)(Idle).remote()
    try:
        placed, _ = ray.wait([blocker.ping.remote()], timeout=300)
        assert placed, "the blocking actor was not placed within 300 s"
        env = {**synth_env(tmp_path / "cache"), "RAY_ADDRESS": ray_address, "SYNTH_RAY_STALL_TIMEOUT": "10"}
        proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_DRIVER, "auto"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stdout, stderr = communicate(proc, 300, "a driver joining a busy cluster")
    finally:
        ray.kill(blocker)
    assert proc.returncode == 0, stderr[-2000:]
    joined = [line for line in stderr.splitlines() if "engine.address 'auto' joined the running cluster" in line]
    assert joined and ray_address in joined[0] and "not started by this run" in joined[0], stderr[-2000:]
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("ResumableFailure: ray: nothing finished for ") and "during echo" in last, last
    assert "2 of 2 actors not started, each needs 0.5 CPUs" in last and "cluster free: 0.25 CPUs" in last, last


def test_sigterm_during_a_ray_run_says_interrupted_and_exits_promptly(small_run, tmp_path):
    # address 'local': the run starts its own cluster, whose ray.init replaces the driver's SIGTERM handler
    err = tmp_path / "stderr.txt"
    with err.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "synth", "run", str(RESA2_RECIPE), "--out", str(tmp_path / "out"),
             *small_run, "--set", "engine.kind=ray"],
            cwd=REPO, env=synth_env(tmp_path / "cache"), stdout=subprocess.DEVNULL, stderr=sink, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while proc.poll() is None and "ray cluster local" not in err.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before its cluster started: {err.read_text()[-2000:]}"
        assert "ray cluster local" in err.read_text(), f"no cluster within 600 s: {err.read_text()[-2000:]}"
        proc.send_signal(signal.SIGTERM)
        communicate(proc, 120, "a Ray run sent SIGTERM")
    stderr = err.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == INTERRUPTED, stderr[-2000:]
    assert not (tmp_path / "out").exists()
