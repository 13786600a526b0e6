"""The one LLM backend protocol, and the request / response records every backend speaks.

A backend turns a batch of ``ChatRequest`` into one ``ChatResponse`` each and reports each one
through a callback as soon as it is final, so the caller can persist it (a killed run keeps every
completed response). Backends own transport concerns: concurrency, retries, rate limits, schema
enforcement and re-asks. Caching, accounting and budgets live above them in ``synth.llm.client``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Protocol, Sequence


def schema_name(prompt_name: str) -> str:
    """A JSON-schema name every server accepts (OpenAI: ``[A-Za-z0-9_-]{1,64}``), for ``ChatRequest.make``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", prompt_name)[:64] or "answer"


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion request. Everything here is part of the cache key."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    params: tuple[tuple[str, Any], ...] = ()  # sampling params: temperature, top_p, max_tokens, seed, stop
    schema: str | None = None  # JSON schema of the answer, as canonical JSON text (see ``canonical``)
    schema_name: str = "answer"

    @staticmethod
    def make(
        messages: list[dict[str, str]] | list[tuple[str, str]],
        params: dict | None = None,
        schema: dict | None = None,
        schema_name: str = "answer",
    ) -> "ChatRequest":
        msgs = tuple((m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1]) for m in messages)
        return ChatRequest(
            msgs, tuple(sorted((params or {}).items())), canonical(schema) if schema is not None else None, schema_name
        )

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def schema_dict(self) -> dict | None:
        """Parsed once per distinct schema (shared: do not mutate)."""
        return _parse_schema(self.schema) if self.schema is not None else None

    @property
    def max_tokens(self) -> int:
        return int(self.param_dict.get("max_tokens", 512))

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


# Why a response failed. Final failures are cached (a rerun must not pay for them again);
# transport failures are not (a resumed run retries them).
FINAL_ERRORS = ("invalid_json", "schema", "length", "refusal", "content_filter", "empty", "bad_request")
TRANSPORT_ERRORS = ("transport", "timeout", "rate_limited", "server_error", "budget")


@dataclass
class ChatResponse:
    text: str | None
    parsed: Any = None  # the validated JSON object when the request had a schema
    finish_reason: str = "stop"  # stop | length | content_filter | refusal | error
    tokens_in: int = 0  # summed over every attempt (re-asks included): what was paid
    tokens_out: int = 0
    latency_s: float = 0.0
    attempts: int = 1  # HTTP attempts + re-asks
    error: str | None = None  # one of FINAL_ERRORS / TRANSPORT_ERRORS, None when ok
    detail: str = ""  # short human-readable reason (never contains secrets)
    cached: bool = False
    model: str = ""  # the model the server says answered

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def final(self) -> bool:
        """Cacheable: a success or a failure that would recur on retry."""
        return self.error is None or self.error in FINAL_ERRORS

    def to_json(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in (
                "text",
                "parsed",
                "finish_reason",
                "tokens_in",
                "tokens_out",
                "latency_s",
                "attempts",
                "error",
                "detail",
                "model",
            )
        }
        return d

    @staticmethod
    def from_json(d: dict) -> "ChatResponse":
        return ChatResponse(**d, cached=True)


OnResponse = Callable[[int, ChatResponse], None]


class BackendUnavailable(Exception):
    """The endpoint could not be reached or refused to start; the message is one user-facing line."""


class Backend(Protocol):
    kind: str  # "openai" | "local" | "vllm" | "openai-batch"

    def identity(self) -> dict:
        """What goes into the cache key besides the request: kind, base_url, model. Never a secret."""

    def start(self) -> None:
        """Connect / launch / probe. Raises ``BackendUnavailable`` with one line when it cannot."""

    def close(self) -> None:
        """Release everything (servers, sockets, GPU memory). Safe to call twice."""

    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        """Answer every request, calling ``on_response(i, response)`` once per index as each becomes final
        (or fails in transport after retries). Stops dispatching new requests once ``should_stop()`` is true
        (budget); requests never dispatched get no callback."""


@lru_cache(maxsize=64)
def _parse_schema(text: str) -> dict:
    return json.loads(text)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(identity: dict, request: ChatRequest) -> str:
    """Content hash of the full request: backend kind, base_url, model, messages, params, schema."""
    payload = {
        "backend": identity,
        "messages": request.messages,
        "params": request.params,
        "schema": request.schema,
        "schema_name": request.schema_name,
    }
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


@dataclass
class Usage:
    """Token and call counters for one (stage, model)."""

    requests_sent: int = 0  # requests that went to the backend (re-asks counted in attempts, not here)
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    failed: int = 0  # responses that are not ok (final or transport)
    failures: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    latency_s: float = 0.0

    def add(self, r: ChatResponse) -> None:
        if r.cached:
            self.cache_hits += 1
        elif r.attempts > 0:  # attempts == 0: never sent (the backend gave up on a dead endpoint)
            self.requests_sent += 1
            self.tokens_in += r.tokens_in
            self.tokens_out += r.tokens_out
            self.attempts += r.attempts
            self.latency_s += r.latency_s
        if not r.ok:
            self.failed += 1
            self.failures[r.error] = self.failures.get(r.error, 0) + 1
