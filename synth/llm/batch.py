"""The OpenAI Batch API: requests go up as JSONL files, come back within the completion window at half
price. Same protocol as every backend; ``generate`` blocks while it polls.

Each JSONL line's ``custom_id`` is the request's content hash (``request_key``), so results map back to
requests whatever order they come in, and identical requests are sent once. Every batch this process
creates is recorded in a small JSON state file, named by the hash of its custom_ids, under ``state_dir``:
a run that gives up waiting (``max_wait_s``) or is killed picks the same batch up when rerun with the
same requests, instead of paying for it twice. Expired or cancelled batches keep their finished lines;
the rest are resubmitted (at most ``max_retries`` times); answers that fail validation are re-asked in a
follow-up batch (at most ``max_reasks`` times).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
import openai

from synth.core.bounded_http import BoundedTransport, CallTimeout, ReplyTooLarge
from synth.core.errors import ResumableFailure
from synth.core.files import atomic_write_text, default_cache_dir
from synth.core.limits import limit, over_limit
from synth.llm.base import (
    BackendUnavailable,
    ChatRequest,
    ChatResponse,
    OnResponse,
    request_key,
)
from synth.llm.config import OpenAIBatchConfig
from synth.llm.openai import OpenAIBackend
from synth.llm.wire import classify_status, env_proxy, parse_completion
from synth.llm.validate import check_answer, reask_request, retryable_by_reask

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
MAX_FILE_BYTES = 190 * 2**20  # the API takes input files up to 200 MB
TERMINAL = ("completed", "failed", "expired", "cancelled")
NOT_RUN = ("batch_expired", "batch_cancelled")  # error-file codes for lines the API never ran


def default_state_dir() -> Path:
    return default_cache_dir() / "llm" / "batches"


@dataclass
class _Item:
    """One distinct request (all indices that asked it) and its progress over batches."""

    request: ChatRequest
    indices: list[int]
    current: ChatRequest
    custom_id: str
    attempts: int = 0
    retries: int = 0  # resubmissions after expiry or line-level transport errors
    reasks: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    model: str = ""


class OpenAIBatchBackend:
    kind = "openai-batch"

    def __init__(self, cfg: OpenAIBatchConfig, api_key: str | None = None):
        self.cfg = cfg
        # start() (reachability, schema probe), the key and the request bodies are the online backend's
        self._online = OpenAIBackend(cfg, api_key, kind=self.kind)
        self.base_url = self._online.base_url
        self.state_dir: Path = default_state_dir()

    @property
    def probe_usage(self) -> tuple[int, int]:
        return self._online.probe_usage

    def identity(self) -> dict:
        return {"kind": self.kind, "base_url": self.base_url, "model": self.cfg.model}

    def start(self) -> None:
        self._online.start()

    def close(self) -> None:
        self._online.close()

    # --- generate ----------------------------------------------------------------------------------
    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        if not requests:
            return
        self._online._check_key()
        t0 = time.monotonic()
        deadline = t0 + self.cfg.max_wait_s
        ident = self.identity()
        items: dict[str, _Item] = {}
        for i, r in enumerate(requests):
            key = request_key(ident, r)
            if key in items:
                items[key].indices.append(i)
            else:
                items[key] = _Item(r, [i], r, key)

        def finish(item: _Item, resp: ChatResponse) -> None:
            resp.latency_s = time.monotonic() - t0
            for n, i in enumerate(item.indices):
                on_response(i, resp if n == 0 else dataclasses.replace(resp))

        # Each call ends within timeout_s (plus upload time) and each reply is bounded; the proxy is
        # resolved as the online backend does (none for loopback), since a custom transport skips httpx's.
        self._transport = BoundedTransport(self.cfg.timeout_s, limit("max_reply_bytes"), proxy=env_proxy(self.base_url))
        http = openai.DefaultHttpxClient(transport=self._transport, trust_env=False)
        with openai.OpenAI(
            api_key=self._online._key,
            base_url=self.base_url,
            max_retries=self.cfg.max_retries,
            timeout=self.cfg.timeout_s,
            http_client=http,
        ) as client:
            pending, first = list(items.values()), True
            while pending:
                running = []
                for chunk in self._chunks(pending):
                    if first and should_stop():  # follow-up rounds belong to requests already dispatched
                        break
                    running.append((self._submit(client, chunk), chunk))
                first, pending = False, []
                for batch, chunk in self._wait(client, running, deadline):
                    pending += self._collect(client, batch, chunk, finish)

    def _chunks(self, items: list[_Item]):
        chunk, size = [], 0
        for item in items:
            line = len(self._line(item))
            if chunk and (len(chunk) >= self.cfg.max_requests_per_batch or size + line > MAX_FILE_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += line
        if chunk:
            yield chunk

    def _line(self, item: _Item) -> bytes:
        body = self._online._body(item.current)
        return (
            json.dumps({"custom_id": item.custom_id, "method": "POST", "url": ENDPOINT, "body": body}).encode() + b"\n"
        )

    def _state_path(self, chunk: list[_Item]) -> Path:
        h = hashlib.sha256("\n".join(sorted(x.custom_id for x in chunk)).encode()).hexdigest()
        return self.state_dir / f"{h[:40]}.json"

    def _submit(self, client: openai.OpenAI, chunk: list[_Item]) -> str:
        """A batch id for these requests: the one a previous run left waiting, or a new one."""
        path = self._state_path(chunk)
        for x in chunk:
            x.attempts += 1
        if path.exists():
            try:
                batch_id = json.loads(path.read_text())["batch_id"]
                self._api(client.batches.retrieve, batch_id)
                log.info("resuming batch %s (%d requests)", batch_id, len(chunk))
                return batch_id
            except (ValueError, KeyError, BackendUnavailable):
                path.unlink(missing_ok=True)
        data = b"".join(self._line(x) for x in chunk)
        f = self._api(
            client.files.create, file=(f"synth-{path.stem[:16]}.jsonl", data, "application/jsonl"), purpose="batch"
        )
        b = self._api(
            client.batches.create,
            input_file_id=f.id,
            endpoint=ENDPOINT,
            completion_window=self.cfg.completion_window,
            metadata={"synth": path.stem[:32]},
        )
        atomic_write_text(
            path,
            json.dumps(
                {
                    "batch_id": b.id,
                    "input_file_id": f.id,
                    "requests": len(chunk),
                    "base_url": self.base_url,
                    "model": self.cfg.model,
                    "created": time.time(),
                }
            ),
        )
        log.info("submitted batch %s (%d requests)", b.id, len(chunk))
        return b.id

    def _wait(self, client: openai.OpenAI, running: list[tuple[str, list[_Item]]], deadline: float):
        """Yield (batch, chunk) as each batch reaches a terminal status; ResumableFailure past the deadline."""
        left = list(running)
        seen: dict[str, str] = {}  # batch id -> last status logged: a long wait says what it waits for
        while left:
            still = []
            for batch_id, chunk in left:
                b = self._api(client.batches.retrieve, batch_id)
                if b.status in TERMINAL:
                    yield b, chunk
                else:
                    still.append((batch_id, chunk, b.status))
                    if seen.get(batch_id) != b.status:
                        seen[batch_id] = b.status
                        log.info(
                            "batch %s is %s; checking every %gs, for at most max_wait_s=%gs",
                            batch_id,
                            b.status,
                            self.cfg.poll_s,
                            self.cfg.max_wait_s,
                        )
            left = [(bid, chunk) for bid, chunk, _ in still]
            if not left:
                return
            if time.monotonic() >= deadline:
                ids = ", ".join(f"{bid} ({status})" for bid, _, status in still)
                raise ResumableFailure(
                    f"{self.base_url}: batch {ids} not finished after max_wait_s="
                    f"{self.cfg.max_wait_s:g}s; rerun the same command to pick it up"
                )
            time.sleep(min(self.cfg.poll_s, max(deadline - time.monotonic(), 0.0)))

    def _collect(self, client: openai.OpenAI, b, chunk: list[_Item], finish) -> list[_Item]:
        """Deliver the final answers of a finished batch; return the items to send again."""
        path = self._state_path(chunk)
        if b.status == "failed":
            path.unlink(missing_ok=True)  # a rerun must submit afresh, not find this batch again
            errors = list(getattr(b.errors, "data", None) or [])
            what = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors[:2])
            more = f" (+{len(errors) - 2} more)" if len(errors) > 2 else ""
            raise BackendUnavailable(
                self._online._scrub(f"{self.base_url}: batch {b.id} failed: {what or 'no reason given'}{more}")
            )
        lines: dict[str, dict] = {}
        wanted = {x.custom_id for x in chunk}
        for fid in (b.output_file_id, b.error_file_id):
            if fid:
                for raw in self._file_lines(client, fid, len(chunk)):
                    if raw.strip():
                        rec = json.loads(raw)
                        if rec.get("custom_id") in wanted:  # kept only for our requests: memory stays bounded
                            lines[rec.get("custom_id")] = rec
        again = []
        for item in chunk:
            resend = self._answer(item, lines.get(item.custom_id), b, finish)
            if resend:
                again.append(item)
        path.unlink(missing_ok=True)
        return again

    def _file_lines(self, client: openai.OpenAI, fid: str, requests: int):
        """The lines of a result file, streamed. A line is one reply (at most SYNTH_MAX_REPLY_BYTES) and the
        file holds one line per request, so the whole file is bounded by that many replies."""
        bound = limit("max_reply_bytes")
        transport = self._transport
        transport.max_bytes, every = bound * max(requests, 1), transport.max_bytes
        try:
            with self._api_errors(), client.files.with_streaming_response.content(fid) as resp:
                tail = b""
                for piece in resp.iter_bytes():
                    *complete, tail = (tail + piece).split(b"\n")
                    if len(tail) > bound:
                        raise over_limit("max_reply_bytes", f"{self.base_url}: batch file {fid}: one line")
                    yield from complete
                yield tail
        finally:
            transport.max_bytes = every

    def _answer(self, item: _Item, rec: dict | None, b, finish) -> bool:
        """Settle one item from its result line; True when it goes into the next batch."""
        response = (rec or {}).get("response")
        if response is None:
            code = ((rec or {}).get("error") or {}).get("code") or f"batch {b.status}"
            if rec is not None and code not in NOT_RUN:
                return self._retry_or_fail(
                    item, "server_error", f"{code}: {(rec.get('error') or {}).get('message', '')}", finish
                )
            return self._retry_or_fail(
                item, "timeout" if b.status == "expired" else "transport", f"not run ({code})", finish
            )
        status, body = response.get("status_code"), response.get("body") or {}
        if status != 200:
            error, retryable = classify_status(int(status or 500))
            msg = body.get("error", {}).get("message", "") if isinstance(body.get("error"), dict) else ""
            detail = self._online._scrub(f"HTTP {status}: {msg}")
            if retryable:
                return self._retry_or_fail(item, error, detail, finish)
            finish(item, self._failed(item, error, detail))
            return False
        try:
            text, reason, refusal, model, tin, tout = parse_completion(body)
        except (KeyError, IndexError, TypeError, AttributeError):
            return self._retry_or_fail(item, "server_error", "result line without a chat completion", finish)
        item.tokens_in += tin
        item.tokens_out += tout
        item.model = model or self.cfg.model
        parsed, error, detail = check_answer(item.request, text, reason, refusal)
        if error is not None and retryable_by_reask(error) and item.reasks < self.cfg.max_reasks:
            item.reasks += 1
            item.current = reask_request(item.current, text or "", detail)
            item.custom_id = request_key(self.identity(), item.current)
            return True
        if error is None:
            finish(
                item,
                ChatResponse(
                    text,
                    parsed,
                    reason or "stop",
                    item.tokens_in,
                    item.tokens_out,
                    attempts=item.attempts,
                    model=item.model,
                ),
            )
        else:
            reason = error if error in ("length", "content_filter", "refusal") else (reason or "stop")
            finish(item, self._failed(item, error, self._online._scrub(detail), reason))
        return False

    def _retry_or_fail(self, item: _Item, error: str, detail: str, finish) -> bool:
        if item.retries < self.cfg.max_retries:
            item.retries += 1
            log.debug("resubmitting %s: %s", item.custom_id[:12], detail)
            return True
        finish(item, self._failed(item, error, f"{detail} (after {item.retries} resubmissions)"))
        return False

    def _failed(self, item: _Item, error: str, detail: str, reason: str = "error") -> ChatResponse:
        return ChatResponse(
            None,
            None,
            reason,
            item.tokens_in,
            item.tokens_out,
            attempts=item.attempts,
            error=error,
            detail=detail[:300],
            model=item.model or self.cfg.model,
        )

    def _api(self, fn, *args, **kwargs):
        """A control-plane call (the openai client retries these itself); failures as one line."""
        with self._api_errors():
            return fn(*args, **kwargs)

    @contextlib.contextmanager
    def _api_errors(self):
        try:
            yield
        except (openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError, CallTimeout) as e:
            cause = e if isinstance(e, CallTimeout) else e.__cause__  # the library wraps what it retried
            if isinstance(cause, ReplyTooLarge):
                raise over_limit("max_reply_bytes", f"{self.base_url}: reply to {cause.call}", cause.got) from None
            if isinstance(cause, CallTimeout):
                raise ResumableFailure(
                    f"{self.base_url}: batch API did not answer {cause.call} within {cause.seconds:g}s "
                    "(timeout_s); rerun the same command to pick the batch up"
                ) from None
            raise ResumableFailure(
                self._online._scrub(f"{self.base_url}: batch API unreachable ({type(e).__name__}: {e})")
            ) from None
        except ReplyTooLarge as e:
            raise over_limit("max_reply_bytes", f"{self.base_url}: reply to {e.call}", e.got) from None
        except httpx2.TransportError as e:  # while streaming a result file, outside the library's retries
            raise ResumableFailure(
                self._online._scrub(f"{self.base_url}: batch API unreachable ({type(e).__name__}: {e})")
            ) from None
        except openai.APIStatusError as e:
            raise BackendUnavailable(
                self._online._scrub(f"{self.base_url}: batch API error (HTTP {e.status_code}: {error_text(e)})")
            ) from None


def error_text(e: openai.APIStatusError) -> str:
    msg = e.body.get("message") if isinstance(e.body, dict) else None  # the library unwraps {"error": ...}
    return str(msg or e.message)[:200]
