"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, TGI, llama.cpp server), asynchronously.

Requests go out through one aiohttp session per ``generate`` call rather than through the openai
library's ``AsyncOpenAI``: on this project's 2-core machines the library's request pipeline (option
copies, header building, httpx2/httpcore2 pooling) costs about 1.1-1.5 ms of CPU per request, which
caps a 64-way client near 0.6-0.8 of the 640 req/s that a 100 ms server allows (P4); aiohttp costs about
0.3 ms. The wire format is the plain chat completions JSON, so nothing OpenAI-specific is lost.

Retries (tenacity): 429, 408, 409, 5xx, timeouts and dropped connections, exponential back-off with
full jitter, at least ``Retry-After`` when the server sends one. Rate limits: RPM and TPM pacers
(prompt estimate + max_tokens). Answers are validated with ``check_answer`` and re-asked on bad JSON.
The API key is only ever sent as the ``Authorization`` header; every detail and exception text is
scrubbed of it and kept to one short line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from synth.core.errors import ResumableFailure
from synth.core.limits import limit
from synth.llm.accounting import prompt_tokens_estimate
from synth.llm.base import BackendUnavailable, ChatRequest, ChatResponse, OnResponse
from synth.llm.config import OpenAIConfig
from synth.llm.validate import check_answer, reask_request, retryable_by_reask
from synth.llm.wire import (
    classify_status,
    env_proxy,
    error_message,
    parse_completion,
    read_bounded,
    retry_after_seconds,
)

log = logging.getLogger(__name__)

NO_KEY = "no-key"  # sent to servers without auth (api_key_env: null)
BREAKER_AFTER = 5  # items failing in transport in a row before the rest are failed without sending
SAY_WAIT_S = 5.0  # a retry wait at least this long is logged (at most once per SAY_EVERY_S)
SAY_EVERY_S = 10.0
PROBE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["verdict"],
    "properties": {"verdict": {"type": "string", "enum": ["zq-alpha-7", "zq-beta-9"]}},
}
# Nothing in the prompt mentions the schema: only a server that enforces it answers with a verdict.
PROBE = ChatRequest.make(
    [("user", "Write one short sentence about the sea.")], {"temperature": 0.0, "max_tokens": 64}, PROBE_SCHEMA, "probe"
)


class _Failure(Exception):
    """One failed HTTP attempt: the ChatResponse error code, a short scrubbed detail, whether a retry
    may help, and the server's Retry-After in seconds."""

    def __init__(self, error: str, detail: str, retryable: bool, retry_after: float | None = None):
        super().__init__(detail)
        self.error, self.detail, self.retryable, self.retry_after = error, detail, retryable, retry_after


@dataclass
class _Tally:
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


class _Pacer:
    """Spaces units evenly at ``per_minute`` (a GCRA without burst): OpenAI enforces per-minute limits
    over shorter windows too, so a full minute's burst at start would be refused."""

    def __init__(self, per_minute: int):
        self.interval = 60.0 / per_minute
        self.tat = 0.0  # when the next unit is free

    def reserve(self, units: float) -> float:
        now = time.monotonic()
        start = max(now, self.tat)
        self.tat = start + units * self.interval
        return start - now


class OpenAIBackend:
    kind = "openai"

    def __init__(self, cfg: OpenAIConfig, api_key: str | None = None, *, kind: str | None = None):
        self.cfg = cfg
        if kind is not None:
            self.kind = kind
        self.base_url = cfg.base_url.rstrip("/")
        self._missing_env: str | None = None
        if api_key is None and cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env) or None
            if api_key is None:
                self._missing_env = cfg.api_key_env
        self._key = api_key or NO_KEY
        self._headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        self._rpm = _Pacer(cfg.rpm) if cfg.rpm else None
        self._tpm = _Pacer(cfg.tpm) if cfg.tpm else None
        self._proxy = env_proxy(self.base_url)
        self._timeout = aiohttp.ClientTimeout(total=cfg.timeout_s)
        self._chat_url = f"{self.base_url}/chat/completions"
        self.probe_usage: tuple[int, int] = (0, 0)  # (tokens_in, tokens_out) spent by start()'s probe
        self._said_wait_at = -math.inf  # when a long retry wait was last logged
        self.closed = False

    def identity(self) -> dict:
        return {"kind": self.kind, "base_url": self.base_url, "model": self.cfg.model}

    def close(self) -> None:
        self.closed = True  # sessions live only inside one generate()/start() call

    # --- start -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._check_key()
        _run(self._start())

    async def _start(self) -> None:
        async with self._session() as session:
            try:
                timeout = aiohttp.ClientTimeout(total=min(self.cfg.timeout_s, 30.0))
                async with session.get(f"{self.base_url}/models", headers=self._headers, timeout=timeout) as r:
                    status = r.status
                    await read_bounded(r, f"{self.base_url}/models")
            except (asyncio.TimeoutError, TimeoutError, aiohttp.ClientError, OSError) as e:
                raise BackendUnavailable(f"{self.base_url}: cannot connect ({self._describe(e)})") from None
            if status in (401, 403):
                where = f"; check ${self.cfg.api_key_env}" if self.cfg.api_key_env else ""
                raise BackendUnavailable(f"{self.base_url}: authentication failed (HTTP {status}){where}")
            if self.cfg.probe_schema:
                await self._probe(session)

    async def _probe(self, session: aiohttp.ClientSession) -> None:
        r = await self._item(session, PROBE, max_reasks=0)
        tin, tout = self.probe_usage
        self.probe_usage = (tin + r.tokens_in, tout + r.tokens_out)
        fix = "set probe_schema: false to accept unvalidated output at your own risk"
        if r.error in ("invalid_json", "schema", "empty", "length", "refusal"):
            raise BackendUnavailable(
                f"{self.base_url}: server does not enforce response_format json_schema "
                f"(probe answer: {r.error}, {r.detail}); {fix}"
            )
        if r.error == "bad_request":
            raise BackendUnavailable(
                f"{self.base_url}: server rejected response_format json_schema ({r.detail}); {fix}"
            )
        if r.error is not None:
            raise BackendUnavailable(f"{self.base_url}: schema probe failed ({r.error}: {r.detail})")

    def _check_key(self) -> None:
        if self._missing_env:
            raise BackendUnavailable(
                f"environment variable {self._missing_env} is not set (it must hold the API key for {self.base_url})"
            )

    # --- generate --------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        if not requests:
            return
        self._check_key()
        _run(self._generate(requests, on_response, should_stop))

    async def _generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool]
    ) -> None:
        pending = iter(range(len(requests)))
        broken: list[ChatResponse] = []  # the failure that opened the breaker
        in_a_row = 0

        async def worker() -> None:
            nonlocal in_a_row
            while not should_stop():
                i = next(pending, None)
                if i is None:
                    return
                if broken:
                    b = broken[0]
                    r = ChatResponse(
                        None,
                        finish_reason="error",
                        attempts=0,
                        error=b.error,
                        model=self.cfg.model,
                        detail=f"not sent: {in_a_row} requests in a row failed (last: {b.detail})"[:300],
                    )
                else:
                    r = await self._item(session, requests[i], self.cfg.max_reasks)
                    if r.error in ("transport", "timeout", "server_error"):
                        in_a_row += 1
                        if in_a_row >= BREAKER_AFTER and not broken:
                            broken.append(r)
                            log.warning(
                                "%s: %d requests in a row failed (%s); failing the rest unsent",
                                self.base_url,
                                in_a_row,
                                r.detail,
                            )
                    elif not broken:
                        in_a_row = 0
                on_response(i, r)

        async with self._session() as session:
            tasks = [asyncio.ensure_future(worker()) for _ in range(min(self.cfg.concurrency, len(requests)))]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, limit_per_host=0, ttl_dns_cache=300)
        return aiohttp.ClientSession(connector=connector, proxy=self._proxy)

    # --- one item: transport retries inside, re-asks outside ---------------------------------------
    async def _item(self, session: aiohttp.ClientSession, request: ChatRequest, max_reasks: int) -> ChatResponse:
        t0 = time.perf_counter()
        tally = _Tally()
        current, reasks = request, 0
        while True:
            try:
                data = await self._call(session, current, tally)
            except _Failure as f:
                return ChatResponse(
                    None,
                    finish_reason="error",
                    tokens_in=tally.tokens_in,
                    tokens_out=tally.tokens_out,
                    latency_s=time.perf_counter() - t0,
                    attempts=tally.attempts,
                    error=f.error,
                    detail=f.detail,
                    model=self.cfg.model,
                )
            text, finish, refusal, model = data
            parsed, error, detail = check_answer(request, text, finish, refusal)
            if error is not None and retryable_by_reask(error) and reasks < max_reasks:
                reasks += 1
                log.debug("re-asking (%d of %d): %s", reasks, max_reasks, error)
                current = reask_request(current, text or "", detail)
                continue
            done = {
                "tokens_in": tally.tokens_in,
                "tokens_out": tally.tokens_out,
                "attempts": tally.attempts,
                "latency_s": time.perf_counter() - t0,
                "model": model,
            }
            if error is None:
                return ChatResponse(text, parsed, finish or "stop", **done)
            reason = error if error in ("length", "content_filter", "refusal") else (finish or "stop")
            return ChatResponse(None, None, reason, error=error, detail=self._scrub(detail), **done)

    async def _call(self, session: aiohttp.ClientSession, request: ChatRequest, tally: _Tally):
        body = self._body(request)
        payload = json.dumps(body).encode()
        cost = prompt_tokens_estimate(request) + int(body.get("max_tokens") or 0) if self._tpm else 0

        async def attempt():
            tally.attempts += 1
            return await self._post(session, payload, cost, tally)

        # The first attempt runs outside tenacity: its bookkeeping costs ~0.1 ms a call, a fifth of the
        # client's CPU per request, and most requests never need a retry.
        try:
            return await attempt()
        except _Failure as f:
            if not f.retryable or self.cfg.max_retries == 0:
                raise
            self._log_retry(1, f, wait := self._backoff(f, 1))
            await asyncio.sleep(wait)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.cfg.max_retries),
            sleep=asyncio.sleep,
            reraise=True,
            retry=retry_if_exception(lambda e: isinstance(e, _Failure) and e.retryable),
            wait=lambda s: self._backoff(s.outcome.exception(), s.attempt_number + 1),
            before_sleep=lambda s: self._log_retry(s.attempt_number + 1, s.outcome.exception(), s.next_action.sleep),
        )
        return await retrying(attempt)

    def _body(self, request: ChatRequest) -> dict:
        cfg, params = self.cfg, request.param_dict
        body = {
            "model": cfg.model,
            "messages": request.message_dicts(),
            "temperature": params.get("temperature", cfg.temperature),
            "top_p": params.get("top_p", cfg.top_p),
            "max_tokens": params.get("max_tokens", cfg.max_tokens),
        }
        for k, v in params.items():
            if v is not None and not (k == "seed" and not cfg.seed_param):
                body.setdefault(k, v)
        if request.schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema_dict, "strict": True},
            }
        return body

    async def _post(self, session: aiohttp.ClientSession, payload: bytes, cost: int, tally: _Tally):
        """One HTTP attempt -> (text, finish_reason, refusal, model); raises ``_Failure``."""
        wait = max(self._rpm.reserve(1) if self._rpm else 0.0, self._tpm.reserve(cost) if self._tpm else 0.0)
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            async with session.post(self._chat_url, data=payload, headers=self._headers, timeout=self._timeout) as resp:
                raw = await read_bounded(resp, self._chat_url)
                status, headers = resp.status, resp.headers
        except (asyncio.TimeoutError, TimeoutError):  # distinct classes before 3.11
            raise _Failure("timeout", f"no answer within {self.cfg.timeout_s:g}s", True) from None
        except (aiohttp.ClientError, OSError) as e:
            raise _Failure("transport", self._describe(e), True) from None
        if status == 200:
            try:
                text, finish, refusal, model, tokens_in, tokens_out = parse_completion(json.loads(raw))
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                raise _Failure("server_error", "HTTP 200 without a chat completion in the body", True) from None
            tally.tokens_in += tokens_in
            tally.tokens_out += tokens_out
            return text, finish, refusal, model or self.cfg.model
        detail = self._scrub(f"HTTP {status}: {error_message(raw)}")
        error, retryable = classify_status(status)
        retry_after = retry_after_seconds(headers) if status in (429, 503) else None
        if retry_after is not None and retryable and retry_after > (bound := limit("max_retry_after")):
            # waiting that long in silence looks like a hang; stopping keeps every finished answer cached
            raise ResumableFailure(
                f"{self.base_url}: the server asks to wait {retry_after:,.0f}s before retrying (HTTP {status}, "
                f"Retry-After), more than SYNTH_MAX_RETRY_AFTER={bound:g}s; completed responses are cached, "
                "rerun the same command later to resume"
            )
        raise _Failure(error, detail, retryable, retry_after)

    def _backoff(self, exc: BaseException | None, failures: int) -> float:
        """Seconds before the next attempt after ``failures`` failed ones: full-jitter exponential, or at
        least the server's Retry-After (plus jitter, so a storm does not come back in one wave)."""
        cfg = self.cfg
        if isinstance(exc, _Failure) and exc.retry_after is not None:
            return min(exc.retry_after, limit("max_retry_after")) + random.uniform(0, cfg.backoff_base_s)
        return random.uniform(0, min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (failures - 1)))

    def _log_retry(self, failures: int, exc: BaseException | None, wait: float) -> None:
        detail = getattr(exc, "detail", type(exc).__name__)
        now = time.monotonic()
        if wait >= SAY_WAIT_S and now - self._said_wait_at >= SAY_EVERY_S:
            self._said_wait_at = now  # many workers wait at once: one line says it for all of them
            server = " (the server's Retry-After)" if getattr(exc, "retry_after", None) is not None else ""
            log.info("%s: waiting %.0fs%s before retrying: %s", self.base_url, wait, server, detail)
        log.debug("attempt %d failed (%s); retrying in %.2fs", failures, detail, wait)

    def _describe(self, e: BaseException) -> str:
        return self._scrub(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    def _scrub(self, text: str) -> str:
        """One short line without the key."""
        if self._key and self._key != NO_KEY:
            text = text.replace(self._key, "***")
        return " ".join(text.split())[:240]


def _run(coro) -> None:
    """``asyncio.run`` in this thread; in a fresh thread when this one already runs a loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
