"""The one LLM client set-up (``synth.llm.pool.ClientPool``) and the dry run's planning pool
(``synth.llm.plan``): real clients over a real request cache, on an OpenAI-compatible config that is never
contacted (a client starts its backend only to send, and neither test sends)."""

from __future__ import annotations

import json

from synth.generate.negatives import answer_schema, negative_prompt
from synth.llm.base import ChatRequest
from synth.llm.config import OpenAIBatchConfig, OpenAIConfig
from synth.llm.plan import PlanningPool, placeholder
from synth.llm.pool import ClientPool
from synth.llm.prompts import PromptLibrary
from synth.llm.validate import check_answer

NOWHERE = "http://127.0.0.1:9/v1"  # discard port: nothing listens, and nothing is sent there


def _cfg(model: str = "m", cls=OpenAIConfig):
    return cls(model=model, base_url=NOWHERE, api_key_env=None, probe_schema=False)


def _request(schema: dict | None, i: int = 0, max_tokens: int = 64) -> ChatRequest:
    return ChatRequest.make([("user", f"question {i}")], {"max_tokens": max_tokens}, schema)


def test_pool_opens_one_client_per_backend_config_over_one_cache_and_one_accounting(tmp_path):
    pool = ClientPool(_cfg("a"), tmp_path)
    try:
        default = pool()
        assert pool(None) is default and pool(_cfg("a")) is default  # the default config is one client
        other = pool(_cfg("b"))
        assert other is not default and other.model == "b"
        assert other.cache is default.cache and other.accounting is default.accounting is pool.accounting
        batch = pool(_cfg("c", OpenAIBatchConfig))
        assert batch.backend.state_dir == tmp_path / "llm" / "batches"  # every command resumes its batches there
    finally:
        pool.close()
    assert ClientPool(None, tmp_path)() is None  # no default LLM: stages without their own get none


def test_placeholders_are_the_largest_answers_the_shipped_schemas_allow():
    prompts = PromptLibrary()
    query = prompts.get("synthetic_query", "t").schema
    persona = prompts.get("persona_from_doc", "t").schema
    negatives = answer_schema(negative_prompt(prompts, "synthetic_negative"), 3)
    for schema, check in (
        (query, lambda v: len(v["query"]) == 300),
        (persona, lambda v: len(v["persona"]) == 300),
        (negatives, lambda v: [len(p) for p in v["passages"]] == [1200] * 3),
    ):
        value = placeholder(schema, 64, "planned-1")
        request = _request(schema)
        parsed, error, detail = check_answer(request, json.dumps(value), "stop")
        assert error is None, detail
        assert check(parsed)
    assert placeholder(query, 64, "planned-1") != placeholder(query, 64, "planned-2")  # distinct per request
    assert len(placeholder(None, 10, "t")) == 40  # free text: bounded by max_tokens


def test_planning_pool_records_each_stage_and_sends_and_writes_nothing(tmp_path):
    schema = PromptLibrary().get("synthetic_query", "t").schema
    cache_dir = tmp_path / "cache"
    pool = PlanningPool(_cfg(), cache_dir)
    try:
        client = pool()
        requests = [_request(schema, i, 50) for i in range(3)] + [_request(schema, 0, 50)]  # one repeated
        answers = client.complete("synthetic_queries", requests)
        client.complete("synthetic_negatives", requests[:1])
    finally:
        pool.close()
    assert all(a.ok and len(a.parsed["query"]) == 300 for a in answers)
    assert len({a.parsed["query"] for a in answers}) == 4
    first, second = pool.rows
    assert (first["stage"], first["requests"], first["cached"], first["to_send"]) == ("synthetic_queries", 4, 0, 3)
    assert first["tokens_out_upper"] == 3 * 50 * (1 + _cfg().max_reasks)
    assert (second["stage"], second["to_send"]) == ("synthetic_negatives", 1)
    assert not cache_dir.exists()  # no request cache yet: a dry run creates none
    assert pool.accounting.report()["requests_sent"] == 0
