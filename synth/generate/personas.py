"""Personas: the shipped starter set, a user file, or text-to-persona generation; then a seeded,
stratified sample of ``n``.

* ``file``: JSONL with a ``persona`` text field (optional ``id``, ``stratum``) per line, or a .txt
  file with one persona per line. A malformed line raises ``InputError`` at ``file:line``; a
  repeated explicit ``id`` is an error, a repeated text (same content id) is skipped and counted.
* ``generate``: ``docs`` corpus documents are sampled (seeded, order-independent) and the LLM
  describes one likely reader/author of each (Persona Hub's text-to-persona). Failed answers and
  duplicate personas are dropped and counted.
* Sampling: strata are visited round-robin in a seeded order; within a stratum personas are taken
  in a seeded order. The draw depends only on (seed, ids), not on file order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from synth.assets import STARTER_PERSONAS

from synth.core.errors import InputError, UserError
from synth.generate.config import PersonasConfig
from synth.core.seeding import request_seed, seeded_order
from synth.core.text import content_id, normal_text
from synth.generate.records import Persona, schema_name, truncate
from synth.llm.base import ChatRequest
from synth.llm.prompts import PromptLibrary
from synth.core.records import Corpus
from synth.core.checks import (
    iter_json_objects,
    iter_lines,
    json_type,
    require_file,
    require_str,
)

STARTER_PATH = STARTER_PERSONAS
STARTER_LICENSE = "Apache-2.0"
DEFAULT_STRATUM = "unstratified"
GENERATED_STRATUM = "generated"


def read_persona_file(path: str | Path, origin: str = "file", license: str | None = None) -> tuple[list[Persona], int]:
    """Personas of a JSONL or .txt file, in file order, and how many repeated texts were skipped."""
    p = require_file(path, "a persona file (.jsonl or .txt)")
    personas: list[Persona] = []
    ids: dict[str, str] = {}  # id -> line it was first seen on
    explicit: set[str] = set()
    repeated = 0
    is_txt = p.suffix.lower() == ".txt"
    rows = ((f"{p}:{n}", {"persona": t}) for n, t in iter_lines(p)) if is_txt else iter_json_objects(p)
    for where, obj in rows:
        text = " ".join(require_str(obj, "persona", where, non_empty=True).split())
        given = obj.get("id")
        if given is not None and (not isinstance(given, (str, int)) or isinstance(given, bool) or str(given) == ""):
            raise InputError(where, f'expected a non-empty string field "id", got {json_type(given)}')
        stratum = obj.get("stratum")
        if stratum is not None and not isinstance(stratum, str):
            raise InputError(where, f'expected string field "stratum", got {json_type(stratum)}')
        pid = str(given) if given is not None else "p-" + content_id(normal_text(text, loose=True))
        if pid in ids:
            if given is not None or pid in explicit:
                raise InputError(
                    where, f'expected a unique persona id, got duplicate "{pid}" (first on line {ids[pid]})'
                )
            repeated += 1  # the same text again, without an explicit id: skip it
            continue
        ids[pid] = where.rsplit(":", 1)[-1]
        if given is not None:
            explicit.add(pid)
        personas.append(Persona(pid, text, origin, (stratum or "").strip() or DEFAULT_STRATUM, None, license))
    if not personas:
        raise InputError(str(p), "expected at least one persona, got none")
    return personas, repeated


def build_persona_requests(
    cfg: PersonasConfig,
    corpus: Corpus,
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "personas",
) -> tuple[list[ChatRequest], list[str]]:
    """Text-to-persona requests for ``cfg.docs`` seeded-sampled documents, and the doc id of each."""
    prompt = prompts.get(cfg.prompt, f"{where}.prompt")
    if prompt.schema is None or "persona" not in prompt.schema.get("properties", {}):
        raise UserError(f"{where}.prompt: {prompt.path} needs a schema file with a string property 'persona'")
    order = seeded_order(corpus.ids, seed, "personas.docs")[: cfg.docs]
    requests, doc_ids = [], []
    for row in order:
        doc_id = corpus.ids[row]
        messages = prompt.render(document=truncate(corpus.texts[row], cfg.max_doc_chars))
        params = dict(client_defaults or {})
        params.update(max_tokens=cfg.max_tokens, seed=request_seed(seed, "persona", doc_id))
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature
        requests.append(ChatRequest.make(messages, params, prompt.schema, schema_name(prompt.name)))
        doc_ids.append(doc_id)
    return requests, doc_ids


def parse_personas(doc_ids: list[str], responses: list, seed: int, license: str | None) -> tuple[list[Persona], dict]:
    """Personas from text-to-persona responses; failed answers and repeated texts dropped and counted."""
    if len(responses) != len(doc_ids):
        raise RuntimeError(f"personas: {len(responses)} responses for {len(doc_ids)} requests")
    failures: Counter = Counter()
    seen: set[str] = set()
    duplicates = 0
    personas: list[Persona] = []
    for doc_id, response in zip(doc_ids, responses):
        if not response.ok:
            failures[response.error or "unknown"] += 1
            continue
        parsed = response.parsed if isinstance(response.parsed, dict) else {}
        value = parsed.get("persona")
        text = " ".join(value.split()) if isinstance(value, str) else ""
        if not text:
            failures["empty_answer"] += 1
            continue
        key = normal_text(text, loose=True)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        personas.append(
            Persona("pg-" + content_id(doc_id, seed), text, "generated", GENERATED_STRATUM, doc_id, license)
        )
    stats = {
        "requests": len(doc_ids),
        "answered": len(personas) + duplicates,
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items())),
        "duplicates": duplicates,
    }
    return personas, stats


def generate_personas(
    cfg: PersonasConfig,
    corpus: Corpus,
    client,
    prompts: PromptLibrary,
    seed: int,
    client_defaults: dict | None = None,
    where: str = "personas",
) -> tuple[list[Persona], dict]:
    """One persona per sampled document (text-to-persona). Stats: requests, answered, failed, failures, duplicates."""
    if client is None:
        raise UserError(f"{where}: source 'generate' needs an llm section")
    requests, doc_ids = build_persona_requests(cfg, corpus, prompts, seed, client_defaults, where)
    responses = client.complete("personas", requests) if requests else []
    personas, stats = parse_personas(doc_ids, responses, seed, cfg.license)
    if not personas:
        raise UserError(
            f"{where}: no persona could be generated from {len(requests)} documents "
            f"(failures: {stats['failures'] or 'none'}); use source: starter or a file"
        )
    return personas, stats


def stratified_sample(personas: list[Persona], n: int, seed: int, by: str = "stratum") -> list[Persona]:
    """``n`` personas: strata visited round-robin in a seeded order, each stratum in a seeded order."""
    groups: dict[str, list[Persona]] = {}
    for p in personas:
        groups.setdefault(p.stratum if by == "stratum" else "", []).append(p)
    strata = list(groups)
    strata = [strata[i] for i in seeded_order(strata, seed, "personas.strata")]
    queues = []
    for s in strata:
        members = groups[s]
        queues.append([members[i] for i in seeded_order([m.id for m in members], seed, "personas.sample")])
    chosen: list[Persona] = []
    depth = 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        for q in queues:
            if depth < len(q) and len(chosen) < n:
                chosen.append(q[depth])
        depth += 1
    return chosen


def load_personas(
    cfg: PersonasConfig,
    corpus: Corpus | None,
    client,
    prompts: PromptLibrary | None,
    seed: int,
    where: str = "personas",
    client_defaults: dict | None = None,
) -> tuple[list[Persona], dict]:
    """The personas a run uses (sampled to ``cfg.n``) and their stats for the report."""
    gen_stats: dict = {}
    repeated = 0
    if cfg.source == "starter":
        available, repeated = read_persona_file(STARTER_PATH, "starter", cfg.license or STARTER_LICENSE)
    elif cfg.source == "file":
        available, repeated = read_persona_file(cfg.path, "file", cfg.license)
    else:
        if corpus is None or prompts is None:
            raise UserError(f"{where}: source 'generate' needs the corpus and the prompts")
        available, gen_stats = generate_personas(cfg, corpus, client, prompts, seed, client_defaults, where)
    chosen = stratified_sample(available, cfg.n, seed, cfg.stratify_by)
    have, took = Counter(p.stratum for p in available), Counter(p.stratum for p in chosen)
    stats = {
        "source": cfg.source,
        "path": str(cfg.path) if cfg.source == "file" else (str(STARTER_PATH) if cfg.source == "starter" else None),
        "license": chosen[0].license if chosen else cfg.license,
        "available": len(available),
        "requested": cfg.n,
        "chosen": len(chosen),
        "stratify_by": cfg.stratify_by,
        "strata": {s: {"available": have[s], "chosen": took[s]} for s in sorted(have)},
        "origin": dict(Counter(p.origin for p in chosen)),
        "repeated_texts_skipped": repeated,
    }
    if gen_stats:
        stats["generation"] = gen_stats
    return chosen, stats
