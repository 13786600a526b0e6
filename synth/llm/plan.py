"""The dry run's LLM: a ``PlanningPool`` whose clients send nothing and answer with placeholders.

``synth run --dry-run`` runs the pipeline's own generation stages (``synth.pipeline.stages``) over
this pool. Each ``complete(stage, requests)`` records what the real client would do with those
requests (``LLMClient.plan``: requests, cached, to send, token upper bounds, cost) and answers every
request with a placeholder of the largest size its JSON schema allows (longest strings, most array
items), so the next stage gets inputs of the right number and size (its token bounds stay upper
bounds) without any model being called. Placeholders are distinct per request, so stages that drop
repeated answers (personas) keep them all.

Nothing is written: the request cache is only read, and only when it already exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from synth.llm.base import ChatRequest, ChatResponse
from synth.llm.pool import ClientPool

# Characters a token stands for when a string answer has no maxLength (the request's max_tokens bounds it).
_CHARS_PER_TOKEN = 4


def placeholder(schema: dict | None, max_tokens: int, tag: str) -> Any:
    """The largest value ``schema`` allows; strings start with ``tag`` so each answer is distinct."""
    return _value(schema or {"type": "string"}, tag, max_tokens * _CHARS_PER_TOKEN)


def _value(s: dict, tag: str, unbounded: int) -> Any:
    if "const" in s:
        return s["const"]
    if s.get("enum"):
        return max(s["enum"], key=lambda v: len(json.dumps(v)))
    t = s.get("type")
    if isinstance(t, list):  # e.g. ["string", "null"]: the non-null kind is the larger answer
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        return {k: _value(v, f"{tag}-{k}", unbounded) for k, v in (s.get("properties") or {}).items()}
    if t == "array":
        n = s.get("maxItems", max(s.get("minItems", 1), 1))
        return [_value(s.get("items") or {"type": "string"}, f"{tag}-{i}", unbounded) for i in range(n)]
    if t == "string":
        n = max(s.get("maxLength", unbounded), s.get("minLength", 0))
        return (tag + "-" + "x" * n)[:n]
    if t == "boolean":
        return True
    if t in ("integer", "number"):
        v = s.get("maximum", s.get("minimum", 0))
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
