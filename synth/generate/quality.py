"""The optional LLM quality judge for synthetic queries (``synthetic_queries.quality_judge``): one request per
generated query, with its document, answered ``{"keep": true|false}`` against the prompt's schema.

It fails closed: a failed request or an answer without a boolean ``keep`` is the verdict ``failed`` and the
query is dropped like a ``drop``. Each request's seed comes from (recipe seed, query id), so a rerun is
served from the request cache. The verdict (``keep`` / ``drop`` / ``failed``) is stored on the query
(``SyntheticQuery.quality``) and reaches the ``synthetic_queries`` config and the training rows' provenance
(``query_quality``); the judge's model and prompt hash go to the report (``synthetic_queries.quality_judge``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from synth.core.errors import UserError
from synth.core.records import Corpus
from synth.core.seeding import request_seed
from synth.generate.config import QualityJudgeConfig
from synth.generate.records import SyntheticQuery, schema_name, truncate
from synth.llm.base import ChatRequest
from synth.llm.prompts import Prompt, PromptLibrary

STAGE = "query_quality"
VERDICTS = ("keep", "drop", "failed")


def quality_prompt(prompts: PromptLibrary, name: str) -> Prompt:
    prompt = prompts.get(name, "synthetic_queries.quality_judge.prompt")
    if (prompt.schema or {}).get("properties", {}).get("keep", {}).get("type") != "boolean":
        raise UserError(
            f"synthetic_queries.quality_judge.prompt: {prompt.path} needs a schema file with a boolean property 'keep'"
        )
    return prompt


def build_quality_requests(
    cfg: QualityJudgeConfig,
    queries: list[SyntheticQuery],
    corpus: Corpus,
    prompt: Prompt,
    seed: int,
    client_defaults: dict | None = None,
) -> list[ChatRequest]:
    requests = []
    for q in queries:
        document = truncate(corpus.texts[corpus.row_of[q.doc_id]], cfg.max_doc_chars)
        params = dict(client_defaults or {})
        params.update(max_tokens=cfg.max_tokens, seed=request_seed(seed, STAGE, q.id))
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature
        messages = prompt.render(query=q.text, document=document)
        requests.append(ChatRequest.make(messages, params, prompt.schema, schema_name(prompt.name)))
    return requests


def judge_queries(
    cfg: QualityJudgeConfig,
    queries: list[SyntheticQuery],
    corpus: Corpus,
    client,
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
) -> tuple[list[SyntheticQuery], dict]:
    """The queries with their ``quality`` verdict set, and the report section."""
    prompt = quality_prompt(prompts, cfg.prompt)
    requests = build_quality_requests(cfg, queries, corpus, prompt, seed, client_defaults)
    responses = client.complete(STAGE, requests) if requests else []
    out, verdicts = [], Counter()
    for q, resp in zip(queries, responses):
        keep = resp.parsed.get("keep") if resp.ok and isinstance(resp.parsed, dict) else None
        verdict = "failed" if not isinstance(keep, bool) else ("keep" if keep else "drop")
        verdicts[verdict] += 1
        out.append(replace(q, quality=verdict))
    report = {
        "model": client.model,
        "prompt": prompt.name,
        "prompt_sha256": prompt.sha256,
        "requests": len(requests),
        "verdicts": {v: verdicts.get(v, 0) for v in VERDICTS},
    }
    return out, report
