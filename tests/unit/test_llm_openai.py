"""OpenAIBackend and OpenAIBatchBackend against the fake OpenAI server over real loopback HTTP.

Nothing is mocked: the fake (``tests/support/fake_openai.py``) injects the faults, and its request log and
counters are the ground truth for retries, re-asks and what went over the wire.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import secrets
import socket
import time

import pytest

from synth.core.errors import ResumableFailure
from synth.llm.base import (
    FINAL_ERRORS,
    TRANSPORT_ERRORS,
    BackendUnavailable,
    ChatRequest,
    ChatResponse,
)
from synth.llm.batch import OpenAIBatchBackend
from synth.llm.config import OpenAIBatchConfig, OpenAIConfig
from synth.llm.openai import OpenAIBackend
from synth.llm.wire import retry_after_seconds
from tests.support.fake_openai import FakeOpenAI, instance

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query", "kind"],
    "properties": {"query": {"type": "string"}, "kind": {"type": "string", "enum": ["easy", "hard"]}},
}
FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}


@pytest.fixture
def server():
    with FakeOpenAI() as s:
        yield s


def backend(server: FakeOpenAI, **kw) -> OpenAIBackend:
    kw = {"api_key_env": None, "probe_schema": False, **FAST, **kw}
    return OpenAIBackend(OpenAIConfig(base_url=server.url, model="fake-model", **kw))


def req(text: str, schema: dict | None = SCHEMA, **params) -> ChatRequest:
    return ChatRequest.make(
        [("system", "You write search queries."), ("user", text)],
        params or {"max_tokens": 32, "temperature": 0.0},
        schema,
    )


def run(b, requests, **kw) -> dict[int, ChatResponse]:
    out: dict[int, ChatResponse] = {}

    def on_response(i: int, r: ChatResponse) -> None:
        assert i not in out, f"index {i} reported twice"
        out[i] = r

    b.generate(requests, on_response, **kw)
    return out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fake_server_answers_valid_instances():
    import jsonschema

    schemas = [
        SCHEMA,
        {"type": "array", "minItems": 3, "items": {"type": "integer", "minimum": 5}},
        {
            "type": "object",
            "properties": {"x": {"$ref": "#/$defs/s"}, "b": {"type": ["boolean", "null"]}},
            "$defs": {"s": {"type": "string", "minLength": 5, "maxLength": 8}},
        },
        {"anyOf": [{"type": "number", "maximum": -3}, {"type": "string"}]},
    ]
    for s in schemas:
        jsonschema.validate(instance(s), s)


# --- start ----------------------------------------------------------------------------------------


def test_start_endpoint_down_is_one_line():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    b = OpenAIBackend(OpenAIConfig(base_url=url, model="m", api_key_env=None))
    with pytest.raises(BackendUnavailable) as e:
        b.start()
    msg = str(e.value)
    assert msg.startswith(f"{url}: cannot connect (") and "\n" not in msg


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("SYNTH_TEST_NO_SUCH_KEY", raising=False)
    b = OpenAIBackend(OpenAIConfig(model="m", api_key_env="SYNTH_TEST_NO_SUCH_KEY"))
    with pytest.raises(BackendUnavailable, match="SYNTH_TEST_NO_SUCH_KEY"):
        b.start()


def test_probe_rejects_a_server_that_does_not_enforce_schemas(server):
    server.enforce_schema = False
    with pytest.raises(BackendUnavailable) as e:
        backend(server, probe_schema=True).start()
    msg = str(e.value)
    assert "does not enforce response_format json_schema" in msg and "probe_schema: false" in msg
    assert "\n" not in msg


def test_probe_accepts_an_enforcing_server_and_reports_usage(server):
    b = backend(server, probe_schema=True)
    b.start()
    assert b.probe_usage[0] > 0 and b.probe_usage[1] > 0
    rf = server.chat_bodies()[-1]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["required"] == ["verdict"]
    b.close()
    b.close()  # idempotent


def test_identity_and_kind_override(server):
    b = OpenAIBackend(OpenAIConfig(base_url=server.url + "/", model="m", api_key_env=None), kind="local")
    assert b.identity() == {"kind": "local", "base_url": server.url, "model": "m"}
    assert OpenAIBackend(OpenAIConfig(base_url=server.url, model="m", api_key_env=None)).kind == "openai"


# --- answers --------------------------------------------------------------------------------------


def test_answers_params_and_concurrency(server):
    server.delay = 0.05
    b = backend(server, concurrency=4)
    requests = [
        req(f"passage {i}", temperature=0.5, top_p=0.9, max_tokens=20, seed=i, stop=["\n\n"]) for i in range(12)
    ] + [req("plain text please", schema=None)]
    out = run(b, requests)
    assert sorted(out) == list(range(13)) and all(r.ok for r in out.values())
    assert out[0].parsed == {"query": "ok", "kind": "easy"} and out[0].attempts == 1
    assert out[12].text == "echo: plain text please" and out[12].finish_reason == "stop"
    assert out[0].tokens_in > 0 and out[0].tokens_out > 0 and out[0].model == "fake-model"
    assert 1 <= server.max_in_flight <= 4
    body = next(x for x in server.chat_bodies() if x["messages"][1]["content"] == "passage 3")
    assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"], body["stop"]) == (
        0.5,
        0.9,
        20,
        3,
        ["\n\n"],
    )
    assert body["response_format"]["json_schema"] == {"name": "answer", "schema": SCHEMA, "strict": True}
    plain = next(x for x in server.chat_bodies() if x["messages"][1]["content"] == "plain text please")
    assert "response_format" not in plain
    run(b, requests[:3])  # generate works again (a fresh event loop each call)


def test_seed_not_sent_when_disabled(server):
    run(backend(server, seed_param=False), [req("x", seed=7, max_tokens=10)])
    assert "seed" not in server.chat_bodies()[0]


def test_generate_inside_a_running_event_loop(server):
    async def main():
        return run(backend(server), [req("a"), req("b")])

    assert all(r.ok for r in asyncio.run(main()).values())


def test_invalid_json_is_reasked_then_fails(server):
    out = run(backend(server, max_reasks=2), [req("q [[bad_json:99]]")])
    r = out[0]
    assert (r.ok, r.error, r.text, r.parsed, r.attempts) == (False, "invalid_json", None, None, 3)
    bodies = server.chat_bodies()
    assert len(bodies) == 3
    last = bodies[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "rejected" in last[-1]["content"]


def test_schema_violation_fails_as_schema(server):
    r = run(backend(server, max_reasks=1), [req("q [[bad_schema:99]]")])[0]
    assert (r.error, r.attempts, r.finish_reason) == ("schema", 2, "stop")


def test_valid_on_second_attempt_sums_tokens(server):
    r = run(backend(server, max_reasks=2), [req("q [[bad_json:1]]")])[0]
    assert r.ok and r.attempts == 2 and r.parsed == {"query": "ok", "kind": "easy"}
    assert len(server.usage_log) == 2
    assert r.tokens_in == sum(u[1] for u in server.usage_log)
    assert r.tokens_out == sum(u[2] for u in server.usage_log)


def test_refusal_and_length(server):
    out = run(backend(server), [req("q [[refuse]]"), req("q [[length]]")])
    assert (out[0].error, out[0].finish_reason, out[0].attempts) == ("refusal", "refusal", 1)
    assert (out[1].error, out[1].finish_reason, out[1].attempts) == ("length", "length", 1)
    assert out[0].final and out[1].final


def test_bad_request_is_final_and_not_retried(server):
    r = run(backend(server), [req("q [[http:400]]")])[0]
    assert (r.error, r.finish_reason, r.attempts) == ("bad_request", "error", 1)
    assert r.error in FINAL_ERRORS and "HTTP 400" in r.detail
    r = run(backend(server), [req("q [[http:401]]")])[0]  # a wrong setup: not cached, not retried
    assert (r.error, r.attempts) == ("transport", 1)


# --- transport ------------------------------------------------------------------------------------


def test_server_errors_retried_then_ok_or_exhausted(server):
    server.fail_next(2, 500)
    r = run(backend(server, max_retries=3), [req("a")])[0]
    assert r.ok and r.attempts == 3
    server.fail_next(10, 500)
    r = run(backend(server, max_retries=2), [req("b")])[0]
    assert (r.error, r.finish_reason, r.attempts, r.text) == ("server_error", "error", 3, None)
    assert r.detail.startswith("HTTP 500") and not r.final


def test_429_storm_honours_retry_after(server):
    server.fail_next(4, 429, retry_after=1)
    t0 = time.perf_counter()
    out = run(backend(server, concurrency=4, max_retries=3), [req(f"q{i}") for i in range(4)])
    elapsed = time.perf_counter() - t0
    assert all(r.ok for r in out.values()) and all(r.attempts == 2 for r in out.values())
    assert elapsed >= 1.0
    server.fail_next(5, 429)
    r = run(backend(server, max_retries=1), [req("x")])[0]
    assert (r.error, r.attempts) == ("rate_limited", 2)


def test_retry_after_http_date(server):
    server.fail_next(1, 503, retry_after=email.utils.formatdate(time.time() + 2, usegmt=True))
    t0 = time.perf_counter()
    r = run(backend(server), [req("q")])[0]
    assert r.ok and r.attempts == 2 and time.perf_counter() - t0 >= 0.9


def test_retry_after_parsing():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert 8 < retry_after_seconds({"retry-after": email.utils.formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_timeouts_are_retried_then_reported(server):
    t0 = time.perf_counter()
    r = run(backend(server, timeout_s=0.2, max_retries=1), [req("q [[sleep:1]]")])[0]
    assert (r.error, r.attempts, r.finish_reason) == ("timeout", 2, "error")
    assert time.perf_counter() - t0 < 0.9


@pytest.mark.parametrize("mode", ["drop", "refuse"])
def test_endpoint_dies_mid_run(server, mode):
    server.delay = 0.01
    server.die_after(10, mode=mode)
    out = run(backend(server, concurrency=4, max_retries=2), [req(f"q{i}") for i in range(40)])
    assert sorted(out) == list(range(40))  # every dispatched index exactly once
    ok = [r for r in out.values() if r.ok]
    failed = [r for r in out.values() if not r.ok]
    assert len(ok) == server.chat_answered and 1 <= len(ok) <= 10
    assert all(r.error in TRANSPORT_ERRORS and r.finish_reason == "error" and r.text is None for r in failed)
    assert any(r.attempts == 3 for r in failed)  # retried before giving up
    assert any(r.attempts == 0 and r.detail.startswith("not sent") for r in failed)  # the breaker opened
    if mode == "drop":  # the server saw every retry
        assert server.chat_requests == sum(r.attempts for r in out.values())


def test_should_stop_stops_dispatching(server):
    got = []
    b = backend(server, concurrency=2)
    b.generate([req(f"q{i}") for i in range(30)], lambda i, r: got.append(i), should_stop=lambda: len(got) >= 5)
    assert 5 <= len(got) < 30 and len(set(got)) == len(got)


def test_rpm_limit(server):
    t0 = time.perf_counter()
    out = run(backend(server, concurrency=10, rpm=120), [req(f"q{i}") for i in range(10)])
    assert all(r.ok for r in out.values()) and time.perf_counter() - t0 >= 4.4


def test_tpm_limit(server):
    # each request costs its prompt estimate (2 short messages: 16) + max_tokens 44 = 60 tokens
    t0 = time.perf_counter()
    out = run(backend(server, concurrency=4, tpm=60 * 120), [req(f"q{i}", max_tokens=44) for i in range(4)])
    assert all(r.ok for r in out.values()) and time.perf_counter() - t0 >= 1.4


def test_api_key_never_leaks(server, monkeypatch, caplog, tmp_path):
    key = "sk-test-" + secrets.token_hex(12)
    monkeypatch.setenv("SYNTH_TEST_OPENAI_KEY", key)
    server.api_key = key
    server.echo_auth_in_errors = True  # a leaky server quotes the Authorization header in its errors
    caplog.set_level(logging.DEBUG)
    b = backend(server, api_key_env="SYNTH_TEST_OPENAI_KEY", probe_schema=True, max_retries=1, timeout_s=0.3)
    b.start()
    server.fail_next(1, 500)
    out = run(
        b, [req("q [[http:400]]"), req("q [[http:503]]"), req("q [[bad_json:9]]"), req("q [[sleep:1]]"), req("fine")]
    )
    assert "HTTP 400" in out[0].detail and "***" in out[0].detail
    texts = [r.detail for r in out.values()] + [json.dumps(r.to_json()) for r in out.values()]
    wrong = OpenAIBackend(OpenAIConfig(base_url=server.url, model="m", api_key_env=None), api_key=key + "x")
    with pytest.raises(BackendUnavailable) as e:
        wrong.start()
    texts.append(str(e.value))
    down = OpenAIBackend(
        OpenAIConfig(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", api_key_env="SYNTH_TEST_OPENAI_KEY")
    )
    with pytest.raises(BackendUnavailable) as e:
        down.start()
    texts.append(str(e.value))
    batch = OpenAIBatchBackend(
        OpenAIBatchConfig(
            base_url=server.url, model="m", api_key_env="SYNTH_TEST_OPENAI_KEY", poll_s=0.01, probe_schema=False
        )
    )
    batch.state_dir = tmp_path
    batch_out = run(batch, [req("in a batch"), req("q [[http:400]]")])
    assert batch_out[0].ok and batch_out[1].error == "bad_request"
    texts += [r.detail for r in batch_out.values()] + [caplog.text, repr(b.identity()), repr(batch.identity())]
    assert all(key not in t for t in texts)
    for rec in server.requests:  # on the wire: only ever the Authorization header
        assert key not in rec.path and key.encode() not in rec.body
        assert all(key not in v for k, v in rec.headers.items() if k != "authorization")
        assert rec.headers["authorization"] in (f"Bearer {key}", f"Bearer {key}x")


# --- the Batch API --------------------------------------------------------------------------------


def batch_backend(server: FakeOpenAI, tmp_path, **kw) -> OpenAIBatchBackend:
    kw = {"api_key_env": None, "probe_schema": False, "poll_s": 0.01, "max_wait_s": 10.0, **FAST, **kw}
    b = OpenAIBatchBackend(OpenAIBatchConfig(base_url=server.url, model="fake-model", **kw))
    b.state_dir = tmp_path / "batches"
    return b


def test_batch_completed(server, tmp_path):
    b = batch_backend(server, tmp_path, max_requests_per_batch=4)
    b.start()
    requests = [req(f"q{i}") for i in range(10)] + [req("q0"), req("text", schema=None)]  # one duplicate
    out = run(b, requests)
    assert sorted(out) == list(range(12)) and all(r.ok for r in out.values())
    assert out[0].parsed == {"query": "ok", "kind": "easy"} and out[10].parsed == out[0].parsed
    assert out[11].text == "echo: text" and out[0].tokens_in > 0
    batches = server.batches()
    assert [len(x["lines"]) for x in batches] == [4, 4, 3]  # the duplicate is sent once
    line = batches[0]["lines"][0]
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"]["response_format"]["json_schema"]["strict"] is True
    assert len({x["custom_id"] for b_ in batches for x in b_["lines"]}) == 11
    assert list((tmp_path / "batches").glob("*.json")) == []  # state removed once consumed


@pytest.mark.parametrize("outcome", ["expired", "cancelled"])
def test_batch_expired_resubmits_the_rest(server, tmp_path, outcome):
    server.batch_outcomes.extend([outcome, "completed"])
    server.batch_expire_keep = 3
    out = run(batch_backend(server, tmp_path), [req(f"q{i}") for i in range(8)])
    assert all(r.ok for r in out.values())
    assert [len(x["lines"]) for x in server.batches()] == [8, 5]
    assert sorted(r.attempts for r in out.values()) == [1, 1, 1, 2, 2, 2, 2, 2]


def test_batch_resubmission_is_bounded(server, tmp_path):
    server.batch_outcomes.extend(["expired"] * 5)
    out = run(batch_backend(server, tmp_path, max_retries=2), [req("q1"), req("q2")])
    assert len(server.batches()) == 3
    for r in out.values():
        assert (r.error, r.finish_reason, r.attempts) == ("timeout", "error", 3) and not r.final
        assert "batch_expired" in r.detail and "\n" not in r.detail


def test_batch_reasks_in_a_follow_up_batch(server, tmp_path):
    out = run(
        batch_backend(server, tmp_path, max_reasks=1),
        [req("a [[bad_json:1]]"), req("b [[bad_json:9]]"), req("c"), req("d [[http:400]]")],
    )
    assert out[0].ok and out[0].attempts == 2
    assert (out[1].error, out[1].attempts) == ("invalid_json", 2)
    assert out[2].ok and out[2].attempts == 1
    assert out[3].error == "bad_request"
    assert [len(x["lines"]) for x in server.batches()] == [4, 2]


def test_batch_failed_is_one_line(server, tmp_path):
    server.batch_outcomes.append("failed")
    with pytest.raises(BackendUnavailable) as e:
        run(batch_backend(server, tmp_path), [req("q1"), req("q2")])
    msg = str(e.value)
    assert "failed" in msg and "Enqueued token limit reached" in msg and "\n" not in msg


def test_batch_polling_is_bounded_and_resumable(server, tmp_path):
    server.batch_polls = 10_000
    b = batch_backend(server, tmp_path, max_wait_s=0.3, poll_s=0.05)
    requests = [req(f"q{i}") for i in range(3)]
    t0 = time.perf_counter()
    with pytest.raises(ResumableFailure) as e:
        run(b, requests)
    assert time.perf_counter() - t0 < 2 and "\n" not in str(e.value)
    assert len(list((tmp_path / "batches").glob("*.json"))) == 1
    server.batch_polls = 0  # the batch finishes; a rerun picks up the same batch
    out = run(batch_backend(server, tmp_path), requests)
    assert all(r.ok for r in out.values()) and len(server.batches()) == 1
