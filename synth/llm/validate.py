"""Strict handling of model output, shared by every backend.

Model output is untrusted: it is parsed with ``json.loads`` (never ``eval``) and validated against the
request's JSON schema. Anything that does not validate is a failure; callers never keep it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema

from synth.llm.base import ChatRequest

REASK = (
    "Your previous answer was rejected: {reason}. Reply again with only a JSON object that "
    "matches the required schema, and nothing else."
)


def check_answer(
    request: ChatRequest, text: str | None, finish_reason: str | None, refusal: str | None = None
) -> tuple[Any, str | None, str]:
    """Returns (parsed, error, detail). ``error`` is None when the answer is usable."""
    if refusal:
        return None, "refusal", refusal[:200]
    if finish_reason == "content_filter":
        return None, "content_filter", "the server filtered the answer"
    if finish_reason == "length":
        return None, "length", f"truncated at max_tokens={request.max_tokens}"
    if text is None or not text.strip():
        return None, "empty", "empty answer"
    if request.schema is None:
        return text, None, ""
    try:
        obj = json.loads(_strip_fence(text))
    except json.JSONDecodeError as e:
        return None, "invalid_json", f"not JSON ({e.msg} at char {e.pos})"
    error = jsonschema.exceptions.best_match(_validator(request.schema).iter_errors(obj))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return None, "schema", f"{where}: {error.message[:160]}"
    return obj, None, ""


@lru_cache(maxsize=64)
def _validator(schema_text: str):
    """Checking the schema itself costs ~0.8 ms; a run has a handful of schemas and many answers."""
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _strip_fence(text: str) -> str:
    """Accept a single ```json fenced block, which some servers emit even in JSON mode."""
    s = text.strip()
    if s.startswith("```") and s.endswith("```"):
        s = s[3:-3]
        if s.startswith("json"):
            s = s[4:]
    return s


def reask_request(request: ChatRequest, bad_text: str, reason: str) -> ChatRequest:
    """The same conversation plus the rejected answer and a correction."""
    msgs = list(request.messages) + [("assistant", bad_text or ""), ("user", REASK.format(reason=reason))]
    return ChatRequest(tuple(msgs), request.params, request.schema, request.schema_name)


def retryable_by_reask(error: str | None) -> bool:
    return error in ("invalid_json", "schema", "empty")
