"""Typed records the generation stages produce, and the helpers their ids and prompts share.

Ids are derived from content and the recipe seed, never from positions, so a resumed or repeated
run yields the same ids: ``sq-`` + a hash of (doc_id, persona_id, query_type, seed) for a query,
``sn-`` + a hash of (query_id, positive_id, seed, slot) for a negative.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from dataclasses import asdict, dataclass

import numpy as np

from synth.samplers.base import stable_key, uniforms


def short_hash(*parts: object, n: int = 16) -> str:
    """First ``n`` hex digits of blake2b over the parts (joined with a unit separator)."""
    return hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:n]


def request_seed(seed: int, *parts: str) -> int:
    """A per-request sampling seed derived from (recipe seed, item key); 31 bits so every server takes it."""
    return stable_key(str(seed), *parts) & 0x7FFFFFFF


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

_SPACE = re.compile(r"\s+")
_EDGE = set(string.punctuation)


def normalize_text(text: str) -> str:
    """For exact-match checks: NFKC, casefolded, whitespace collapsed, punctuation stripped at both ends."""
    s = _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
    start, end = 0, len(s)
    while start < end and (s[start] in _EDGE or s[start].isspace() or unicodedata.category(s[start]).startswith("P")):
        start += 1
    while end > start and (s[end - 1] in _EDGE or s[end - 1].isspace() or unicodedata.category(s[end - 1]).startswith("P")):
        end -= 1
    return s[start:end]


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary when one is near the end."""
    text = text.strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max(max_chars - 1, 0)]
    space = cut.rfind(" ")
    if space >= 0.8 * len(cut):
        cut = cut[:space]
    return cut.rstrip() + "…"


def clean_answer(text: str) -> str:
    """Strip whitespace and one pair of wrapping quotes a model may add around a generated text."""
    s = " ".join(str(text).split())
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'`":
        s = s[1:-1].strip()
    return s


def seeded_order(ids: list[str], seed: int, salt: str) -> list[int]:
    """Indices of ``ids`` in a seeded random order that depends only on (seed, salt, id), never on the
    list's order: taking a prefix is a uniform sample without replacement, and a longer prefix
    extends a shorter one."""
    if not ids:
        return []
    keys = np.fromiter((stable_key(i) for i in ids), dtype=np.uint64, count=len(ids))
    u = uniforms(seed, keys, salt, 1)[:, 0]  # 53-bit draws: ties are practically impossible
    return np.argsort(u, kind="stable").tolist()


def schema_name(prompt_name: str) -> str:
    """A JSON-schema name every server accepts (OpenAI: ``[A-Za-z0-9_-]{1,64}``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prompt_name)[:64] or "answer"
