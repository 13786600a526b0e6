"""Typed records the generation stages produce, and the helpers their ids and prompts share.

Ids are derived from content and the recipe seed, never from positions, so a resumed or repeated
run yields the same ids: ``sq-`` + ``content_id`` of (doc_id, persona_id, query_type, seed) for a query,
``sn-`` + ``content_id`` of (query_id, positive_id, seed, slot) for a negative.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

# shared with the LLM judges, so they live below both; the generation stages keep importing them from here
from synth.core.text import truncate as truncate
from synth.llm.base import schema_name as schema_name


@dataclass
class Persona:
    id: str
    text: str
    origin: str  # starter | file | generated
    stratum: str
    source_doc_id: str | None = None  # for generated personas: the document it was derived from
    license: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SyntheticQuery:
    id: str
    text: str
    doc_id: str  # the document it was written for: its positive
    persona_id: str  # "" when generated without personas
    query_type: str
    model: str
    prompt: str
    prompt_sha256: str
    seed: int  # the per-request sampling seed
    request_key: str  # the request-cache key of the request that produced it
    quality: str = ""  # the LLM quality judge's verdict (keep / drop / failed); "" when not judged

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SyntheticNegative:
    id: str
    query_id: str
    query_text: str
    positive_id: str
    text: str
    model: str
    prompt: str
    prompt_sha256: str
    seed: int
    request_key: str
    synthetic: bool = True

    def to_json(self) -> dict:
        return asdict(self)


# -- text helpers -----------------------------------------------------------------------------------


def clean_answer(text: str) -> str:
    """Strip whitespace and one pair of wrapping quotes a model may add around a generated text."""
    s = " ".join(str(text).split())
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
        s = s[1:-1].strip()
    return s
