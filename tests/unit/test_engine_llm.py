"""The LLM path of the engines without Ray: the per-shard store, the shard worker and ``RemoteBackend`` over the
local engine, against the fake OpenAI server over real loopback HTTP (its answer log is the ground truth for
what was sent), and the vLLM-on-Ray row builders and parsers (vllm itself is not installed here).

A worker killed mid-shard is a real process killed with SIGKILL once its shard file holds some answers."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time

import pytest

from synth.core.seeding import stable_key
from synth.engine.base import LocalEngine
from synth.engine.llm import LLMShardWorker, RemoteBackend, ShardStore, identity_folder, shard_id
from synth.engine.vllm_rows import (
    ERROR_COLUMN,
    answer_rounds,
    output_fields,
    parse_output,
    processor_config,
    request_row,
    row_seed,
)
from synth.llm.base import ChatRequest, ChatResponse, request_key
from synth.llm.client import LLMClient
from synth.llm.accounting import Accounting
from synth.llm.cache import RequestCache
from synth.llm.config import OpenAIConfig, VLLMConfig
from tests.conftest import REPO
from tests.support.fake_openai import FakeOpenAI

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string"}},
}
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 8}


def requests(n: int, tag: str = "doc") -> list[ChatRequest]:
    return [
        ChatRequest.make([("system", "Write a query."), ("user", f"{tag} {i}")], {"max_tokens": 32}, SCHEMA)
        for i in range(n)
    ]


def config(server: FakeOpenAI, **kw) -> OpenAIConfig:
    return OpenAIConfig(base_url=server.url, model="fake-model", **{"api_key_env": None, **FAST, **kw})


def answers_per_request(server: FakeOpenAI) -> collections.Counter:
    """HTTP 200 answers per request content (the first user message); the schema probe excluded."""
    return collections.Counter(first for first, _, _ in server.usage_log if not first.startswith("Write one short"))


def generate(backend, reqs) -> dict[int, ChatResponse]:
    got: dict[int, ChatResponse] = {}

    def on_response(i: int, r: ChatResponse) -> None:
        assert i not in got, f"request {i} answered twice"
        got[i] = r

    backend.generate(reqs, on_response)
    return got


# --- the store ------------------------------------------------------------------------------------


def test_store_appends_final_responses_only_and_reads_them_back(tmp_path):
    store = ShardStore(tmp_path / "s")
    ok = ChatResponse('{"query": "a"}', {"query": "a"}, tokens_in=3, tokens_out=2, model="m")
    refused = ChatResponse(None, finish_reason="refusal", error="refusal", detail="no")
    limited = ChatResponse(None, finish_reason="error", error="rate_limited", detail="HTTP 429")
    keys = [request_key({"kind": "openai"}, r) for r in requests(3)]
    assert store.append("s1", keys[0], ok) and store.append("s1", keys[1], refused)
    assert not store.append("s1", keys[2], limited)  # transport failure: a rerun retries it
    found = store.answered(keys)
    assert set(found) == set(keys[:2])
    assert found[keys[0]].parsed == {"query": "a"} and found[keys[0]].cached and found[keys[0]].tokens_in == 3
    assert found[keys[1]].error == "refusal"
    assert store.answered(keys, shard="other") == {}
    assert set(store.answered(keys[:1], shard="s1")) == {keys[0]}


def test_store_ignores_a_torn_last_line_and_appends_after_it(tmp_path):
    store = ShardStore(tmp_path)
    keys = [request_key({"kind": "openai"}, r) for r in requests(3)]
    store.append("s", keys[0], ChatResponse("x"))
    with open(store.path("s"), "ab") as f:  # a worker killed in the middle of writing its second line
        f.write(json.dumps({"key": keys[1], "response": ChatResponse("y").to_json()}).encode()[:50])
    assert set(store.answered(keys)) == {keys[0]}
    store.append("s", keys[2], ChatResponse("z"))  # the next attempt's line starts on a line of its own
    assert set(store.answered(keys)) == {keys[0], keys[2]}
    assert store.path("s").read_bytes().endswith(b"\n")


def test_store_folder_is_per_backend_identity_and_shards_are_named_by_content(tmp_path):
    a = identity_folder(tmp_path, {"kind": "openai", "base_url": "http://a/v1", "model": "m"})
    b = identity_folder(tmp_path, {"kind": "openai", "base_url": "http://b/v1", "model": "m"})
    assert a != b and a.parent == b.parent == tmp_path / "llm-shards"
    assert shard_id(["k1", "k2"]) == shard_id(["k1", "k2"]) != shard_id(["k1", "k3"])


# --- RemoteBackend over the local engine -----------------------------------------------------------


def test_remote_backend_answers_each_request_once_through_429s_and_a_rerun_sends_nothing(tmp_path):
    reqs = requests(40)
    with FakeOpenAI() as server:
        backend = RemoteBackend(config(server), LocalEngine(), tmp_path, shard_rows=7)
        backend.start()  # the probe, from the driver (no key needed here)
        server.fail_next(12, 429)
        got = generate(backend, reqs)
        assert sorted(got) == list(range(40)) and all(r.ok and not r.cached for r in got.values())
        counts = answers_per_request(server)
        assert len(counts) == 40 and set(counts.values()) == {1}  # every distinct request answered exactly once
        assert sum(r.attempts for r in got.values()) == 40 + 12  # the 429s were retried inside the workers
        sent = server.chat_requests
        again = generate(RemoteBackend(config(server), LocalEngine(), tmp_path, shard_rows=5), reqs)
        assert server.chat_requests == sent  # a rerun (other shard size, fresh backend) sends nothing
        assert all(r.cached for r in again.values()) and [again[i].text for i in range(40)] == [
            got[i].text for i in range(40)
        ]
    # fixed shards of 7 sorted keys, one file each, one line per answer
    files = sorted(backend.store.folder.glob("*.jsonl"))
    assert len(files) == 6 and sum(len(f.read_text().splitlines()) for f in files) == 40


def test_remote_backend_keeps_keys_and_answers_of_the_local_backend(tmp_path):
    """Same identity as ``OpenAIBackend``: a cache written by a local run serves a distributed one."""
    from synth.llm.openai import OpenAIBackend

    with FakeOpenAI() as server:
        cfg = config(server)
        assert RemoteBackend(cfg, LocalEngine(), tmp_path).identity() == OpenAIBackend(cfg).identity()


def test_identical_requests_in_one_batch_are_sent_once(tmp_path):
    reqs = requests(5) + requests(5)
    with FakeOpenAI() as server:
        got = generate(RemoteBackend(config(server, probe_schema=False), LocalEngine(), tmp_path, shard_rows=3), reqs)
        assert sorted(got) == list(range(10)) and [got[i].text for i in range(5)] == [got[i].text for i in range(5, 10)]
        assert set(answers_per_request(server).values()) == {1}


def test_the_client_over_remote_backend_caches_on_the_driver_and_a_rerun_sends_zero(tmp_path):
    reqs = requests(20)
    with FakeOpenAI() as server:
        server.fail_next(6, 429)
        cache = RequestCache.in_dir(tmp_path / "cache")
        client = LLMClient(
            RemoteBackend(config(server), LocalEngine(), tmp_path / "store", shard_rows=6), cache, Accounting()
        )
        first = client.complete("synthetic_queries", reqs)
        assert all(r.ok for r in first) and len(cache) == 20
        sent = server.chat_requests
        second = client.complete("synthetic_queries", reqs)
        assert server.chat_requests == sent and all(r.cached for r in second)
        client.close()
        cache.close()
    report = client.accounting.report()["stages"]["synthetic_queries"]
    assert (report["requests_sent"], report["cache_hits"], report["failed"]) == (20, 20, 0)
    assert server.chat_requests == 1 + 20 + 6  # the schema probe, each request once, the 429s retried


def test_worker_retrying_its_shard_sends_only_what_its_first_attempt_did_not_store(tmp_path):
    reqs = requests(6)
    with FakeOpenAI() as server:
        cfg = config(server, probe_schema=False)
        ident = RemoteBackend(cfg, LocalEngine(), tmp_path).identity()
        items = sorted((request_key(ident, r), r) for r in reqs)
        shard = {"id": shard_id([k for k, _ in items]), "requests": items}
        worker = LLMShardWorker(cfg.model_dump_json(), str(tmp_path / "w"))
        ShardStore(tmp_path / "w").append(shard["id"], items[0][0], ChatResponse('{"query": "stored"}'))
        out = worker(shard)
        assert [k for k, _, _ in out] == [k for k, _ in items]
        assert [fresh for _, _, fresh in out] == [False] + [True] * 5 and out[0][1]["text"] == '{"query": "stored"}'
        assert sum(answers_per_request(server).values()) == 5
        again = LLMShardWorker(cfg.model_dump_json(), str(tmp_path / "w"))(shard)
        assert not any(fresh for _, _, fresh in again) and sum(answers_per_request(server).values()) == 5


_KILLED_WORKER = """
import sys
from synth.engine.llm import LLMShardWorker, RemoteBackend, shard_id
from synth.engine.base import LocalEngine
from synth.llm.base import request_key
from synth.llm.config import OpenAIConfig
from tests.unit.test_engine_llm import requests
cfg = OpenAIConfig.model_validate_json(sys.argv[1])
ident = RemoteBackend(cfg, LocalEngine(), sys.argv[2]).identity()
items = sorted((request_key(ident, r), r) for r in requests(int(sys.argv[3])))
store = RemoteBackend(cfg, LocalEngine(), sys.argv[2]).store
LLMShardWorker(sys.argv[1], str(store.folder))({"id": shard_id([k for k, _ in items]), "requests": items})
"""


def test_a_worker_killed_mid_shard_resumes_without_resending_answered_requests(tmp_path):
    n, k = 24, 5
    reqs = requests(n)
    with FakeOpenAI(delay=0.05) as server:
        cfg = config(server, probe_schema=False, concurrency=2)
        store = RemoteBackend(cfg, LocalEngine(), tmp_path).store
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WORKER, cfg.model_dump_json(), str(tmp_path), str(n)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 60
        try:
            while time.time() < deadline and proc.poll() is None:
                stored = sum(len(f.read_bytes().splitlines()) for f in store.folder.glob("*.jsonl"))
                if stored >= k:
                    break
                time.sleep(0.01)
        finally:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        keys = [request_key(RemoteBackend(cfg, LocalEngine(), tmp_path).identity(), r) for r in reqs]
        kept = store.answered(keys)
        assert k <= len(kept) < n
        got = generate(RemoteBackend(cfg, LocalEngine(), tmp_path, shard_rows=4), reqs)
        assert sorted(got) == list(range(n)) and all(r.ok for r in got.values())
        assert sum(got[i].cached for i in range(n)) == len(kept)  # served from the store, not sent again
        # the resume sent exactly the unanswered rest, each once (no 429s here)
        assert [i for i in range(n) if not got[i].cached] == [i for i in range(n) if keys[i] not in kept]
        assert all(got[i].attempts == 1 for i in range(n) if not got[i].cached)
    after = answers_per_request(server)
    assert all(after[f"doc {i}"] == 1 for i in range(n) if keys[i] in kept)
    # twice: only requests in flight at the kill (the server answered a dead connection; nothing was stored)
    assert len(after) == n and sum(v - 1 for v in after.values()) <= cfg.concurrency


def test_worker_config_splits_limits_across_actors_and_carries_no_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_TEST_SECRET", "sk-never-in-args")
    cfg = OpenAIConfig(model="m", api_key_env="SYNTH_TEST_SECRET", concurrency=64, rpm=600, tpm=100_000)
    remote = RemoteBackend(cfg, LocalEngine(), tmp_path, actors=4)
    worker = json.loads(remote.worker_config())
    assert (worker["concurrency"], worker["rpm"], worker["tpm"]) == (16, 150, 25_000)
    assert worker["api_key_env"] == "SYNTH_TEST_SECRET" and "sk-never" not in remote.worker_config()


def test_worker_without_the_key_in_its_environment_fails_its_requests_in_transport(tmp_path, monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_ABSENT", raising=False)
    reqs = requests(3)
    with FakeOpenAI() as server:
        cfg = config(server, api_key_env="SYNTH_TEST_ABSENT")
        remote = RemoteBackend(cfg, LocalEngine(), tmp_path)
        remote.start()  # the driver has no key either: the workers check on their side
        got = generate(remote, reqs)
        assert server.chat_requests == 0
    assert all(r.error == "transport" and "SYNTH_TEST_ABSENT" in r.detail for r in got.values())
    assert not list(remote.store.folder.glob("*.jsonl"))  # transport failures are never stored


def test_worker_checks_the_endpoint_when_the_driver_could_not(tmp_path):
    """No key on the driver: each worker probes the schema enforcement on its first shard; a server that does
    not enforce it gets nothing else, and the requests fail in transport (nothing stored, a rerun retries)."""
    reqs = requests(4)
    with FakeOpenAI() as server:
        server.enforce_schema = False
        cfg = config(server)
        items = sorted((request_key(RemoteBackend(cfg, LocalEngine(), tmp_path).identity(), r), r) for r in reqs)
        shard = {"id": shard_id([k for k, _ in items]), "requests": items}
        worker = LLMShardWorker(cfg.model_dump_json(), str(tmp_path), probe=True)
        out = worker(shard) + worker(shard)  # the second shard is failed without another probe
        assert server.chat_requests == 1  # the probe only
    assert all(not fresh or data["error"] == "transport" for _, data, fresh in out)
    assert all("does not enforce" in data["detail"] for _, data, _ in out)
    assert not list(tmp_path.rglob("*.jsonl"))


# --- vLLM on Ray: rows and parsing ------------------------------------------------------------------


def vllm_cfg(**kw) -> VLLMConfig:
    return VLLMConfig(model="/models/qwen", **{"temperature": 0.7, "max_tokens": 64, **kw})


def test_request_row_has_messages_sampling_params_seed_and_structured_output():
    cfg = vllm_cfg()
    seeded = ChatRequest.make([("user", "a")], {"max_tokens": 16, "seed": 1234, "stop": "\n"}, SCHEMA)
    plain = ChatRequest.make([("system", "s"), ("user", "b")], {"temperature": 0.0})
    k1, k2 = (request_key({"kind": "vllm"}, r) for r in (seeded, plain))
    r1, r2 = request_row(seeded, k1, cfg), request_row(plain, k2, cfg)
    assert r1["key"] == k1 and r1["messages"] == [{"role": "user", "content": "a"}]
    assert r1["sampling_params"] == {
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 16,
        "seed": 1234,
        "stop": ["\n"],
        "structured_outputs": {"json": seeded.schema},
    }
    assert json.loads(r1["sampling_params"]["structured_outputs"]["json"]) == SCHEMA
    sp = r2["sampling_params"]
    assert (sp["temperature"], sp["max_tokens"], sp["stop"], sp["structured_outputs"]) == (0.0, 64, None, None)
    assert sp["seed"] == row_seed(plain, k2) == stable_key("vllm-row", k2) & 0x7FFFFFFF  # from content
    assert set(r1["sampling_params"]) == set(sp)  # one Arrow type for every row
    json.dumps([r1, r2])  # plain JSON values only


def test_processor_config_names_ray_2_60_fields():
    conf = processor_config(vllm_cfg(max_model_len=4096), actors=3, batch_rows=32, gpus_per_actor=1.0)
    assert conf["model_source"] == "/models/qwen" and conf["concurrency"] == 3 and conf["batch_size"] == 32
    assert conf["engine_kwargs"]["max_model_len"] == 4096 and conf["should_continue_on_error"] is True
    assert conf["placement_group_config"] == {"bundle_per_worker": {"GPU": 1.0}}
    llm = pytest.importorskip("ray.data.llm")  # the config validates without vllm installed
    built = llm.vLLMEngineProcessorConfig(**conf)
    assert (built.concurrency, built.batch_size, built.engine_kwargs["max_model_len"]) == (3, 32, 4096)
    assert built.placement_group_config["bundle_per_worker"]["GPU"] == 1.0
    assert "placement_group_config" not in processor_config(vllm_cfg(), actors=1, batch_rows=8)  # Ray's default


def test_parse_output_validates_like_every_backend():
    req = ChatRequest.make([("user", "q")], {"max_tokens": 8}, SCHEMA)
    row = {"key": "k", "generated_text": '{"query": "x"}', "num_input_tokens": 5, "num_generated_tokens": 4}
    assert output_fields({**row, "prompt": "long", "generated_tokens": [1, 2]}) == row
    ok = parse_output(row, req, "m")
    assert ok.ok and ok.parsed == {"query": "x"} and (ok.tokens_in, ok.tokens_out, ok.model) == (5, 4, "m")
    bad = parse_output({**row, "generated_text": '{"other": 1}'}, req, "m")
    assert bad.error == "schema" and bad.final
    cut = parse_output({**row, "generated_text": '{"query": "xx', "num_generated_tokens": 8}, req, "m")
    assert cut.error == "length" and cut.finish_reason == "length"
    too_long = parse_output({**row, ERROR_COLUMN: "ValueError: prompt is longer than max_model_len"}, req, "m")
    assert too_long.error == "bad_request" and too_long.final
    dead = parse_output({**row, ERROR_COLUMN: "EngineDeadError: engine died"}, req, "m")
    assert dead.error == "server_error" and not dead.final


def test_answer_rounds_reasks_invalid_answers_and_keeps_request_order():
    """The driver loop over any ``rows -> output rows`` callable (Ray's processor on a cluster): answers come
    back in any order; an invalid answer is asked again with the correction appended."""
    cfg = vllm_cfg(max_reasks=1)
    reqs = requests(4)
    calls: list[list[dict]] = []

    def process(rows):  # plays the processor: the answer for "doc 2" is not JSON the first time
        calls.append(rows)
        for row in reversed(rows):
            first = row["messages"][1]["content"]
            bad = first == "doc 2" and len(row["messages"]) == 2
            text = "not json" if bad else json.dumps({"query": first})
            yield {"key": row["key"], "generated_text": text, "num_input_tokens": 3, "num_generated_tokens": 2}

    got: dict[int, ChatResponse] = {}
    answer_rounds(reqs, {"kind": "vllm", "base_url": "in-process", "model": cfg.model}, cfg, process, got.__setitem__)
    assert [got[i].parsed for i in range(4)] == [{"query": f"doc {i}"} for i in range(4)]
    assert [len(c) for c in calls] == [4, 1] and got[2].attempts == 2 and got[2].tokens_in == 6
    assert [r["key"] for r in calls[0]] == sorted(r["key"] for r in calls[0])  # rows sorted by key
