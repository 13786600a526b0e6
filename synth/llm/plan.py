"""The dry run's LLM: a ``PlanningPool`` whose clients send nothing and answer with placeholders.

``synth run --dry-run`` runs the pipeline's own generation stages (``synth.pipeline.stages``) over
this pool. Each ``complete(stage, requests)`` records what the real client would do with those
requests (``LLMClient.plan``: requests, cached, to send, token upper bounds, cost) and answers every
request with a placeholder of the largest size its JSON schema allows (longest strings, most array
items, within what one real reply could hold), so the next stage gets inputs of the right number and size (its token bounds stay upper
bounds) without any model being called. Placeholders are distinct per request, so stages that drop
repeated answers (personas) keep them all.

Nothing is written: the request cache is only read, and only when it already exists.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from synth.core.limits import limit
from synth.llm.base import ChatRequest, ChatResponse
from synth.llm.pool import ClientPool

# Characters a token stands for when a string answer has no maxLength (the request's max_tokens bounds it).
_CHARS_PER_TOKEN = 4
# No real answer is longer than this many characters a token (far above any tokenizer's average), so a
# placeholder never needs more: it stays an upper bound while a schema's `maxLength: 1e9` builds nothing.
_MAX_CHARS_PER_TOKEN = 64


def placeholder(schema: dict | None, max_tokens: int, tag: str) -> Any:
    """The largest value ``schema`` allows; strings start with ``tag`` so each answer is distinct.

    The whole answer stays within what a real reply could hold: ``max_tokens`` tokens of at most
    ``_MAX_CHARS_PER_TOKEN`` characters, and never more than one reply's bytes (``max_reply_bytes``);
    an array has at most ``max_tokens`` items (each takes a token). Shipped schemas never reach this."""
    room = [min(max_tokens * _MAX_CHARS_PER_TOKEN, limit("max_reply_bytes"))]
    return _value(schema or {"type": "string"}, tag, max_tokens * _CHARS_PER_TOKEN, max_tokens, room)


def _count(value: Any, default: int) -> int:
    """A schema's size keyword as a count (a malformed one counts as the default)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else default


def _value(s: dict, tag: str, unbounded: int, max_items: int, room: list[int]) -> Any:
    if not isinstance(s, dict):
        return None
    if "const" in s:
        return s["const"]
    if s.get("enum"):
        return max(s["enum"], key=lambda v: len(json.dumps(v)))
    t = s.get("type")
    if isinstance(t, list):  # e.g. ["string", "null"]: the non-null kind is the larger answer
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        return {k: _value(v, f"{tag}-{k}", unbounded, max_items, room) for k, v in (s.get("properties") or {}).items()}
    if t == "array":
        n = min(_count(s.get("maxItems"), max(_count(s.get("minItems"), 1), 1)), max_items)
        items = []
        for i in range(n):
            if room[0] <= 0:
                break
            room[0] -= 1  # the separator: an array item is never free
            items.append(_value(s.get("items") or {"type": "string"}, f"{tag}-{i}", unbounded, max_items, room))
        return items
    if t == "string":
        n = min(max(_count(s.get("maxLength"), unbounded), _count(s.get("minLength"), 0)), max(room[0], 0))
        room[0] -= n + 2  # and its quotes
        return (tag + "-" + "x" * n)[:n]
    if t == "boolean":
        return True
    if t in ("integer", "number"):
        v = s.get("maximum", s.get("minimum", 0))
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            v = 0  # a malformed bound (text, Infinity): the answer check reports the schema, not the plan
        return int(v) if t == "integer" else float(v)
    return None


class PlanningClient:
    """Stands in for an ``LLMClient`` (same ``identity``, ``model``, request keys and cache lookups)."""

    def __init__(self, client, rows: list[dict]):
        self.client = client  # the real client, never started
        self.identity = client.identity
        self.model = client.model
        self.accounting = client.accounting
        self.rows = rows
        self._n = 0

    def keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        return self.client.keys(requests)

    def complete(self, stage: str, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        self.rows.append(self.client.plan(stage, requests))
        out = []
        for r in requests:
            self._n += 1
            parsed = placeholder(r.schema_dict, r.max_tokens, f"planned-{self._n}")
            out.append(
                ChatResponse(json.dumps(parsed), parsed if r.schema is not None else None, attempts=0, model=self.model)
            )
        return out

    def plan(self, stage: str, requests: Sequence[ChatRequest]) -> dict:
        return self.client.plan(stage, requests)

    def close(self) -> None:
        self.client.close()


class _NoCache:
    """An empty request cache: a dry run with a fresh cache dir creates nothing."""

    def get_many(self, keys: list[str]) -> dict:
        return {}

    def put(self, key: str, response: ChatResponse) -> None:
        raise RuntimeError("a dry run never stores a response")

    def close(self) -> None:
        pass


class PlanningPool(ClientPool):
    """A ``ClientPool`` for the dry run: its clients are ``PlanningClient``s; ``rows`` holds one plan row
    per ``complete`` call, in the order the stages made them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[dict] = []

    def request_cache(self):
        if self._cache is None and not (Path(self.cache_dir) / "llm" / "requests.sqlite").exists():
            self._cache = _NoCache()
        return super().request_cache()

    def _open(self, cfg):
        return PlanningClient(super()._open(cfg), self.rows)
