"""Synthetic queries: sampled documents x personas x query types, one LLM request each.

The plan is a pure function of (config, corpus ids, persona ids, seed):

* documents: the first ``docs`` of a seeded order over corpus ids (a uniform sample; more docs
  extend the sample, never reshuffle it);
* personas per document: the ``personas_per_doc`` smallest of per-(doc, persona) uniforms, with
  personas keyed by id, so persona file order does not matter;
* query types per (document, persona): ``types_per_doc`` drawn the same way over the configured types,
  or, with ``type_quotas``, one type per (document, persona) in quota counts (``synth.generate.quotas``);
* ``max_queries_per_doc``: a document (all its chunks together, ``Corpus.document_of``) gets at most that
  many queries; a chunk whose document is full is skipped and the walk goes on, so ``docs`` chunks are
  still sampled when the corpus has them.

Each request carries a seed derived from (recipe seed, doc id, persona id, type), so a rerun sends
byte-identical requests and is served from the request cache. ``build_query_requests`` sends
nothing (a dry run counts and prices its output); ``generate_queries`` sends them and parses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from synth.core.errors import UserError
from synth.generate.config import QUERY_TYPES, SyntheticQueriesConfig
from synth.generate.quotas import assign_types
from synth.core.seeding import request_seed, seeded_order
from synth.core.text import content_id
from synth.generate.records import Persona, SyntheticQuery, clean_answer, schema_name, truncate
from synth.llm.base import ChatRequest, ChatResponse, request_key
from synth.llm.prompts import Prompt, PromptLibrary
from synth.core.records import Corpus
from synth.core.seeding import stable_key, uniforms

STAGE = "synthetic_queries"


@dataclass(frozen=True)
class QueryPlanItem:
    """One planned request: which document, persona and query type, and the ids it yields."""

    id: str  # the SyntheticQuery id its answer gets
    doc_id: str
    persona_id: str  # "" without personas
    query_type: str
    seed: int  # the request's sampling seed


def _smallest(u: np.ndarray, k: int) -> list[int]:
    """Columns of the ``k`` smallest values of one row, smallest first (ties by column)."""
    return np.argsort(u, kind="stable")[:k].tolist()


def plan_queries(
    cfg: SyntheticQueriesConfig, corpus: Corpus, personas: list[Persona], seed: int
) -> list[QueryPlanItem]:
    by_id = sorted(personas, key=lambda p: p.id)
    quotas = cfg.type_quotas
    types = [t for t in QUERY_TYPES if t in (quotas or cfg.query_types)]  # canonical order, whatever the config's
    slots: list[tuple[str, str, list[str]]] = []  # (doc id, persona id, query types)
    per_document: Counter = Counter()
    taken = 0
    for row in seeded_order(corpus.ids, seed, "queries.docs"):
        if taken == cfg.docs:
            break
        doc_id = corpus.ids[row]
        document = corpus.document_of(row)
        room = None if cfg.max_queries_per_doc is None else cfg.max_queries_per_doc - per_document[document]
        if room is not None and room <= 0:
            continue  # this chunk's document has its share: the sample walks on
        if by_id:
            u = uniforms(seed, np.array([stable_key(doc_id)], np.uint64), "queries.personas", len(by_id))[0]
            chosen = [by_id[j].id for j in _smallest(u, cfg.personas_per_doc)]
        else:
            chosen = [""]
        for persona_id in chosen:
            if quotas:
                drawn = [""]  # assigned below, over all slots
            else:
                key = np.array([stable_key(doc_id, persona_id)], np.uint64)
                drawn = [
                    types[j] for j in _smallest(uniforms(seed, key, "queries.types", len(types))[0], cfg.types_per_doc)
                ]
            if room is not None:
                drawn = drawn[: cfg.max_queries_per_doc - per_document[document]]  # what this chunk's personas left
            if drawn:
                slots.append((doc_id, persona_id, drawn))
                per_document[document] += len(drawn)
        taken += 1  # a chunk with room for at least one query
    if quotas:
        assigned = assign_types([f"{d}\x1f{p}" for d, p, _ in slots], quotas, seed)
        slots = [(d, p, [t]) for (d, p, _), t in zip(slots, assigned)]
    return [
        QueryPlanItem(
            id="sq-" + content_id(doc_id, persona_id, qtype, seed),
            doc_id=doc_id,
            persona_id=persona_id,
            query_type=qtype,
            seed=request_seed(seed, "synthetic_query", doc_id, persona_id, qtype),
        )
        for doc_id, persona_id, drawn in slots
        for qtype in drawn
    ]


def query_prompt(prompts: PromptLibrary, name: str, where: str = "synthetic_queries") -> Prompt:
    prompt = prompts.get(name, f"{where}.prompt")
    if prompt.schema is None or "query" not in prompt.schema.get("properties", {}):
        raise UserError(f"{where}.prompt: {prompt.path} needs a schema file with a string property 'query'")
    return prompt


def build_query_requests(
    cfg: SyntheticQueriesConfig,
    corpus: Corpus,
    personas: list[Persona],
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "synthetic_queries",
) -> tuple[list[ChatRequest], list[QueryPlanItem]]:
    """The requests (aligned with their plan items); nothing is sent."""
    prompt = query_prompt(prompts, cfg.prompt, where)
    text_of = {p.id: p.text for p in personas}
    items = plan_queries(cfg, corpus, personas, seed)
    requests = []
    docs: dict[str, str] = {}
    for it in items:
        doc = docs.get(it.doc_id)
        if doc is None:
            doc = docs[it.doc_id] = truncate(corpus.texts[corpus.row_of[it.doc_id]], cfg.max_doc_chars)
        messages = prompt.render(
            document=doc,
            persona=text_of.get(it.persona_id) or None,
            query_type=it.query_type,
            max_doc_chars=cfg.max_doc_chars,
        )
        params = dict(client_defaults or {})
        params.update(max_tokens=cfg.max_tokens, seed=it.seed)
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature
        requests.append(ChatRequest.make(messages, params, prompt.schema, schema_name(prompt.name)))
    return requests, items


def parse_queries(
    items: list[QueryPlanItem],
    requests: list[ChatRequest],
    responses: list[ChatResponse],
    prompt: Prompt,
    identity: dict,
    model: str,
) -> tuple[list[SyntheticQuery], dict]:
    """Turn responses into records. Failed responses and empty answers are dropped and counted by kind."""
    if len(responses) != len(items):
        raise RuntimeError(f"{STAGE}: {len(responses)} responses for {len(items)} requests")
    failures: Counter = Counter()
    out: list[SyntheticQuery] = []
    for it, req, resp in zip(items, requests, responses):
        if not resp.ok:
            failures[resp.error or "unknown"] += 1
            continue
        parsed = resp.parsed if isinstance(resp.parsed, dict) else {}
        text = clean_answer(parsed.get("query") or "") if isinstance(parsed.get("query"), str) else ""
        if not text:
            failures["empty_answer"] += 1
            continue
        out.append(
            SyntheticQuery(
                it.id,
                text,
                it.doc_id,
                it.persona_id,
                it.query_type,
                model,
                prompt.name,
                prompt.sha256,
                it.seed,
                request_key(identity, req),
            )
        )
    stats = {
        "requests": len(items),
        "answered": len(out),
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items())),
        "docs": len({it.doc_id for it in items}),
        "personas": len({it.persona_id for it in items if it.persona_id}),
        "by_type": dict(sorted(Counter(q.query_type for q in out).items())),
    }
    return out, stats


def generate_queries(
    cfg: SyntheticQueriesConfig,
    corpus: Corpus,
    personas: list[Persona],
    client,
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "synthetic_queries",
) -> tuple[list[SyntheticQuery], dict]:
    """Send the planned requests through ``client`` and keep the parsed queries (unfiltered).

    Stats: requests, answered, failed, failures {error kind: n}, docs, personas, by_type {type: n}."""
    requests, items = build_query_requests(cfg, corpus, personas, prompts, seed, client_defaults, where)
    responses = client.complete(STAGE, requests) if requests else []
    prompt = query_prompt(prompts, cfg.prompt, where)
    return parse_queries(items, requests, responses, prompt, client.identity, client.model)
