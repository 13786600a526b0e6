"""The LLM path on a real local Ray cluster against the fake OpenAI server (429s injected): requests go out from
Ray actors (``synth.engine.llm.RemoteBackend`` over ``RayEngine.map_actors``), each request is answered once
across the workers (the server's own log is the count), and a rerun sends nothing.

One cluster per module (``tests.support.ray_cluster``: more CPUs declared than the machine has, half-CPU actors,
so 2 cores never deadlock; dashboard and usage stats off). The API key is put in the environment before the
cluster starts, so the workers read it from their own environment; it is never in a config or an item."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tests.support.ray_cluster  # noqa: F401  (before ray: the test cluster's environment, loopback only)

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

from synth.engine.config import RayEngineConfig  # noqa: E402
from synth.engine.ray_engine import RayEngine  # noqa: E402
from synth.llm.base import ChatRequest  # noqa: E402
from synth.llm.config import OpenAIConfig  # noqa: E402
from synth.llm.pool import ClientPool  # noqa: E402
from tests.conftest import EXAMPLE, REPO  # noqa: E402
from tests.support.fake_openai import FakeOpenAI  # noqa: E402

SECRET = "sk-ray-test-never-in-args-7c2e"
KEY_ENV = "SYNTH_RAY_TEST_KEY"
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string"}},
}
# probe_schema off: the 429s injected below must hit the requests, not the start-up probe
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 8, "timeout_s": 10, "probe_schema": False}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """The test cluster (``tests.support.ray_cluster``) for this module, with the API key in the environment it
    starts from, so its workers have it; yields the address CLI runs join (``engine.address``)."""
    from tests.support.ray_cluster import local_cluster

    saved = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = SECRET  # before ray.init: the raylet and its workers inherit it
    try:
        with local_cluster() as address:
            yield address
    finally:
        if saved is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = saved


def answers_per_request(server: FakeOpenAI) -> collections.Counter:
    """HTTP 200 answers per request content (first user message), the schema probe left out."""
    return collections.Counter(first for first, _, _ in server.usage_log if not first.startswith("Write one short"))


def test_pool_on_ray_sends_each_request_once_across_workers_and_a_rerun_sends_zero(cluster, tmp_path):
    reqs = [
        ChatRequest.make([("system", "Write a query."), ("user", f"passage {i}")], {"max_tokens": 32}, SCHEMA)
        for i in range(48)
    ]
    engine_cfg = RayEngineConfig(address=cluster, actors=2, actor_cpus=0.5, llm_shard_rows=6)
    with FakeOpenAI(api_key=SECRET, delay=0.01) as server:
        cfg = OpenAIConfig(base_url=server.url, model="fake-model", api_key_env=KEY_ENV, concurrency=8, **FAST)
        engine = RayEngine(engine_cfg, cache_dir=str(tmp_path))
        try:
            with ClientPool(cfg, tmp_path / "cache", engine=engine) as pool:
                server.fail_next(15, 429)
                first = pool().complete("synthetic_queries", reqs)
                assert all(r.ok for r in first) and len(first) == 48
                counts = answers_per_request(server)
                assert len(counts) == 48 and set(counts.values()) == {1}  # once each, across the workers
                assert server.chat_requests == 48 + 15  # each request once, each 429 retried once
                stage = engine.report()["stages"]["llm"]
                assert stage["tasks"] == 8 and stage["workers"] == 2
                sent = server.chat_requests
                again = pool().complete("synthetic_queries", reqs)  # the driver's SQLite cache
                assert server.chat_requests == sent and all(r.cached for r in again)
            # another node's driver with an empty SQLite cache, the same shared storage: the shard store serves
            other = RayEngine(engine_cfg.model_copy(update={"storage": str(tmp_path / "cache")}))
            with ClientPool(cfg, tmp_path / "other-cache", engine=other) as pool:
                third = pool().complete("synthetic_queries", reqs)
            other.close()
            assert [r.text for r in third] == [r.text for r in first] and all(r.cached for r in third)
            assert server.chat_requests == sent
        finally:
            engine.close()
    for f in (tmp_path / "cache").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_a_killed_llm_worker_loses_no_answer_and_a_rerun_resends_none_it_stored(cluster, tmp_path):
    """SIGKILL one LLM actor once the shard store holds answers: the stage finishes (Ray restarts the actor and
    retries its shard, which skips what the shard file holds) or fails with one resumable line; a rerun then
    completes, and no stored answer is ever asked again."""
    import threading

    from synth.core.errors import ResumableFailure
    from tests.support.ray_cluster import actor_processes

    reqs = [
        ChatRequest.make([("system", "Write a query."), ("user", f"killed {i}")], {"max_tokens": 32}, SCHEMA)
        for i in range(64)
    ]
    engine_cfg = RayEngineConfig(address=cluster, actors=2, actor_cpus=0.5, llm_shard_rows=16)
    outcome: dict = {}
    with FakeOpenAI(api_key=SECRET, delay=0.1) as server:
        cfg = OpenAIConfig(base_url=server.url, model="fake-model", api_key_env=KEY_ENV, concurrency=4, **FAST)
        engine = RayEngine(engine_cfg)
        try:
            pool = ClientPool(cfg, tmp_path / "cache", engine=engine)
            folder, keys = pool().backend.store.folder, pool().keys(reqs)

            def first_run() -> None:
                try:
                    outcome["responses"] = pool().complete("synthetic_queries", reqs)
                except ResumableFailure as e:
                    outcome["failure"] = str(e)

            thread = threading.Thread(target=first_run)
            thread.start()
            stored_at_kill, deadline = 0, time.time() + 120
            while time.time() < deadline and thread.is_alive():
                stored_at_kill = sum(len(f.read_bytes().splitlines()) for f in folder.glob("*.jsonl"))
                if stored_at_kill >= 6:
                    break
                time.sleep(0.02)
            victims = actor_processes("_Host")
            assert victims, "no LLM actor to kill"
            victims[0].send_signal(signal.SIGKILL)
            thread.join(300)
            assert not thread.is_alive(), "the LLM stage whose worker was killed still waited after 300 s"
            pool.close()
            assert 6 <= stored_at_kill < 64
            if "failure" in outcome:
                assert "\n" not in outcome["failure"] and "rerun" in outcome["failure"]
            else:
                assert all(r.ok for r in outcome["responses"])
            stored = {json.loads(line)["key"] for f in folder.glob("*.jsonl") for line in f.read_text().splitlines()}
            before = answers_per_request(server)
            with ClientPool(cfg, tmp_path / "cache", engine=engine) as pool:
                rerun = pool().complete("synthetic_queries", reqs)
            assert all(r.ok for r in rerun)
        finally:
            engine.close()
    after = answers_per_request(server)
    assert len(after) == 64  # no request lost
    assert all(after[f"killed {i}"] == before[f"killed {i}"] for i in range(64) if keys[i] in stored)
    # twice at most: a request in flight in the killed actor (answered to a dead connection, never stored)
    assert all(c <= 2 for c in after.values()) and sum(c - 1 for c in after.values()) <= cfg.concurrency


def test_vllm_rows_keep_their_sampling_params_through_ray_data_blocks(cluster):
    """Rows with and without a schema, seed or stop share Arrow blocks: each row's ``sampling_params`` must come
    out as it went in (``structured_outputs`` None stays None, so Ray's vLLM stage builds no constraint for it)."""
    import ray.data

    from synth.engine.vllm_rows import request_row
    from synth.llm.base import request_key
    from synth.llm.config import VLLMConfig

    cfg = VLLMConfig(model="/models/m")
    reqs = [
        ChatRequest.make([("user", "a")], {"max_tokens": 8, "seed": 3, "stop": ["\n", "END"]}, SCHEMA),
        ChatRequest.make([("system", "s"), ("user", "b")], {"temperature": 0.0}),
        ChatRequest.make([("user", "c")], {}, {"type": "array", "items": {"type": "integer"}}),
    ]
    rows = [request_row(r, request_key({"kind": "vllm"}, r), cfg) for r in reqs]
    out = ray.data.from_items(rows, override_num_blocks=1).map(lambda row: row).take_all()
    assert sorted(out, key=lambda r: r["key"]) == sorted(rows, key=lambda r: r["key"])


# --- a whole run through the CLI ---------------------------------------------------------------------

N_QUERIES = 16  # docs x personas_per_doc x types_per_doc below


def _recipe(tmp_path: Path, base_url: str) -> Path:
    recipe = {
        "name": "ray-llm",
        "seed": 5,
        "source": {"kind": "beir", "path": str(EXAMPLE), "split": "train"},
        "llm": {"kind": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": KEY_ENV, **FAST},
        "personas": {"source": "starter", "n": 4},
        "synthetic_queries": {
            "docs": 8,
            "personas_per_doc": 1,
            "types_per_doc": 2,
            "filters": {"min_chars": 1, "round_trip_k": None, "near_dup_threshold": None},
        },
        "output": {"format": "pairs"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _synth(cache: Path, *args: str) -> subprocess.CompletedProcess:
    # No key in the driver's environment: only the cluster's workers have it.
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    env.pop(KEY_ENV, None)
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], capture_output=True, text=True, env=env, timeout=900, cwd=REPO
    )


def _cache(cache_dir: Path, tmp_path: Path) -> Path:
    """A private cache (its own LLM cache and shard store) sharing the session's embeddings of the example data."""
    private = tmp_path / "cache"
    private.mkdir(exist_ok=True)
    (cache_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    (private / "embeddings").symlink_to(cache_dir / "embeddings")
    return private


def test_cli_run_on_ray_sends_each_request_once_with_429s_and_a_rerun_sends_zero(cluster, cache_dir, tmp_path):
    cache, out = _cache(cache_dir, tmp_path), tmp_path / "out"
    ray_args = [
        "--set",
        "engine.kind=ray",
        "--set",
        f"engine.address={cluster}",
        "--set",
        "engine.actors=2",
        "--set",
        "engine.llm_shard_rows=4",
    ]
    with FakeOpenAI(api_key=SECRET) as server:
        recipe = _recipe(tmp_path, server.url)
        server.fail_next(10, 429)
        proc = _synth(cache, "run", str(recipe), "--out", str(out), *ray_args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        counts = answers_per_request(server)
        assert len(counts) == N_QUERIES and set(counts.values()) == {1}
        sent = server.chat_requests
        shards = list((cache / "llm-shards").rglob("*.jsonl"))
        assert len(shards) == N_QUERIES // 4 and sum(len(f.read_text().splitlines()) for f in shards) == N_QUERIES
        # the driver's SQLite cache gone (another driver node): the shard store on shared storage serves the rerun
        for f in (cache / "llm").glob("requests.sqlite*"):
            f.unlink()
        rerun = _synth(cache, "run", str(recipe), "--out", str(tmp_path / "out2"), *ray_args)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert server.chat_requests == sent  # a rerun sends 0
    report = json.loads((out / "report.json").read_text())
    assert report["engine"]["kind"] == "ray" and report["engine"]["stages"]["llm"]["workers"] >= 2
    assert report["llm"]["stages"]["synthetic_queries"]["requests_sent"] == N_QUERIES
    assert SECRET not in proc.stdout + proc.stderr + rerun.stdout + rerun.stderr
    for f in (cache / "llm-shards").rglob("*"):
        assert not f.is_file() or SECRET.encode() not in f.read_bytes()
    again = json.loads((tmp_path / "out2" / "report.json").read_text())["llm"]["stages"]["synthetic_queries"]
    assert again["requests_sent"] == 0 and again["cache_hits"] == N_QUERIES
