"""Synthetic hard negatives (SyNeg / E5-mistral style): for each (query, positive) pair one request
asks for ``per_pair`` passages that share the positive's topic and key terms but do not answer the
query. Every passage is stored with its provenance and ``synthetic=True``.

The answer schema is the prompt's schema with ``passages.minItems = maxItems = per_pair``. Which pairs
get negatives (synthetic / real / both, ``max_pairs``) is decided by the caller; pairs arrive as
``(query_id, query_text, positive_id, positive_text)`` tuples and repeated (query, positive) pairs
are sent once.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass

from synth.core.errors import UserError
from synth.generate.config import SyntheticNegativesConfig
from synth.core.seeding import request_seed
from synth.core.text import content_id
from synth.generate.records import SyntheticNegative, clean_answer, schema_name, truncate
from synth.llm.base import ChatRequest, ChatResponse, request_key
from synth.llm.prompts import Prompt, PromptLibrary

STAGE = "synthetic_negatives"
Pair = tuple[str, str, str, str]  # (query_id, query_text, positive_id, positive_text)


@dataclass(frozen=True)
class NegativePlanItem:
    query_id: str
    query_text: str
    positive_id: str
    seed: int


def negative_prompt(prompts: PromptLibrary, name: str, where: str = "synthetic_negatives") -> Prompt:
    prompt = prompts.get(name, f"{where}.prompt")
    props = (prompt.schema or {}).get("properties", {})
    if props.get("passages", {}).get("type") != "array":
        raise UserError(f"{where}.prompt: {prompt.path} needs a schema file with an array property 'passages'")
    return prompt


def answer_schema(prompt: Prompt, per_pair: int) -> dict:
    """The prompt's schema with exactly ``per_pair`` passages required."""
    schema = copy.deepcopy(prompt.schema)
    schema["properties"]["passages"]["minItems"] = per_pair
    schema["properties"]["passages"]["maxItems"] = per_pair
    return schema


def _target_words(text: str) -> int:
    return max(30, min(120, len(text.split())))


def build_negative_requests(
    cfg: SyntheticNegativesConfig,
    pairs: list[Pair],
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "synthetic_negatives",
) -> tuple[list[ChatRequest], list[NegativePlanItem]]:
    """One request per distinct (query, positive) pair, in the order given; nothing is sent."""
    prompt = negative_prompt(prompts, cfg.prompt, where)
    schema = answer_schema(prompt, cfg.per_pair)
    seen: set[tuple[str, str]] = set()
    requests, items = [], []
    for query_id, query_text, positive_id, positive_text in pairs:
        if (query_id, positive_id) in seen:
            continue
        seen.add((query_id, positive_id))
        document = truncate(positive_text, cfg.max_doc_chars)
        messages = prompt.render(
            query=query_text,
            document=document,
            n=cfg.per_pair,
            words=_target_words(document),
            max_doc_chars=cfg.max_doc_chars,
        )
        item_seed = request_seed(seed, "synthetic_negative", query_id, positive_id)
        params = dict(client_defaults or {})
        params.update(max_tokens=cfg.max_tokens, seed=item_seed)
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature
        requests.append(ChatRequest.make(messages, params, schema, schema_name(prompt.name)))
        items.append(NegativePlanItem(query_id, query_text, positive_id, item_seed))
    return requests, items


def parse_negatives(
    items: list[NegativePlanItem],
    requests: list[ChatRequest],
    responses: list[ChatResponse],
    prompt: Prompt,
    per_pair: int,
    seed: int,
    identity: dict,
    model: str,
) -> tuple[list[SyntheticNegative], dict]:
    """Records from the responses; failed responses and empty passages are dropped and counted."""
    if len(responses) != len(items):
        raise RuntimeError(f"{STAGE}: {len(responses)} responses for {len(items)} requests")
    failures: Counter = Counter()
    empty = 0
    answered = 0
    out: list[SyntheticNegative] = []
    for it, req, resp in zip(items, requests, responses):
        if not resp.ok:
            failures[resp.error or "unknown"] += 1
            continue
        parsed = resp.parsed if isinstance(resp.parsed, dict) else {}
        passages = parsed.get("passages")
        if not isinstance(passages, list):
            failures["schema"] += 1
            continue
        answered += 1
        key = request_key(identity, req)
        for slot, raw in enumerate(passages[:per_pair]):
            text = clean_answer(raw) if isinstance(raw, str) else ""
            if not text:
                empty += 1
                continue
            out.append(
                SyntheticNegative(
                    id="sn-" + content_id(it.query_id, it.positive_id, seed, slot),
                    query_id=it.query_id,
                    query_text=it.query_text,
                    positive_id=it.positive_id,
                    text=text,
                    model=model,
                    prompt=prompt.name,
                    prompt_sha256=prompt.sha256,
                    seed=it.seed,
                    request_key=key,
                )
            )
    stats = {
        "requests": len(items),
        "answered": answered,
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items())),
        "passages": len(out),
        "empty_passages": empty,
    }
    return out, stats


def generate_negatives(
    cfg: SyntheticNegativesConfig,
    pairs: list[Pair],
    client,
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "synthetic_negatives",
) -> tuple[list[SyntheticNegative], dict]:
    """Send one request per pair and keep every non-empty passage (unfiltered; see ``filters.filter_negatives``).

    Stats: requests, answered, failed, failures {error kind: n}, passages, empty_passages."""
    requests, items = build_negative_requests(cfg, pairs, prompts, seed, client_defaults, where)
    responses = client.complete(STAGE, requests) if requests else []
    prompt = negative_prompt(prompts, cfg.prompt, where)
    return parse_negatives(items, requests, responses, prompt, cfg.per_pair, seed, client.identity, client.model)
