"""A fault-injecting OpenAI-compatible HTTP server, for tests (a context manager serving from a thread)
and benchmarks (``python -m tests.support.fake_openai --port 0 --delay 0.1``, in its own process).

It is an asyncio server with a minimal HTTP/1.1 keep-alive parser (stdlib only): a thread per connection
does not keep up with 64 keep-alive connections at 640 req/s on two cores.

Behaviour per request is set by markers in the *first* user message (so re-asks, which append messages,
keep them): ``[[bad_json:N]]`` / ``[[bad_schema:N]]`` (the first N attempts of that conversation are not
JSON / violate the schema), ``[[refuse]]``, ``[[length]]``, ``[[sleep:S]]`` (seconds), ``[[http:STATUS]]``.
Server-wide knobs are attributes and methods (``delay``, ``enforce_schema``, ``fail_next``, ``drop_next``,
``die_after``, ``batch_outcomes`` ...) and may be changed while it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP

_MARKER = re.compile(r"\[\[(\w+)(?::([\d.]+))?\]\]")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
DROP = object()  # close the connection without answering


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    lines: list[dict]
    outcome: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    polls: int = 0
    errors: dict | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})


def instance(schema: dict, root: dict | None = None):
    """A minimal instance of a simple JSON schema (objects, arrays, enums, strings, numbers)."""
    root = root if root is not None else schema
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return instance(node, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return instance(schema[key][0], root)
    t = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        return {k: instance(v, root) for k, v in schema.get("properties", {}).items()}
    if t == "array":
        n = max(schema.get("minItems", 1), 1)
        n = min(n, schema.get("maxItems", n))
        return [instance(schema.get("items", {}), root) for _ in range(n)]
    if t in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        return min(lo, schema.get("maximum", lo))
    if t == "boolean":
        return True
    if t == "null":
        return None
    lo = schema.get("minLength", 0)
    return ("ok" * (lo + 1))[: max(lo, min(2, schema.get("maxLength", 2)))]


class FakeOpenAI:
    def __init__(
        self,
        *,
        delay: float = 0.0,
        model: str = "fake-model",
        api_key: str | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.delay = delay  # seconds before each chat answer
        self.model = model
        self.api_key = api_key  # when set, other bearers get 401
        self.record = record
        self.host, self.port = host, port
        self.enforce_schema = True  # False: json_schema requests get plain text (the probe must fail)
        self.invalid_json_first = 0  # every conversation: the first N attempts are not JSON
        self.schema_violation_first = 0
        self.refuse = False  # every answer is a refusal
        self.truncate = False  # every answer stops at max_tokens (finish_reason "length")
        self.echo_auth_in_errors = False  # a leaky server: error messages quote the Authorization header
        self.batch_outcomes: deque[str] = deque()  # per created batch: completed|expired|failed|cancelled
        self.batch_polls = 1  # retrieves answered "in_progress" before a batch finishes
        self.batch_expire_keep = 0  # lines an expired/cancelled batch still answers
        self.requests: list[Recorded] = []
        self.usage_log: list[tuple[str, int, int]] = []  # (first user message, prompt, completion) per answer
        self.chat_requests = 0  # chat attempts received, faults included
        self.chat_answered = 0  # chat answers (any status) written to a live connection
        self.connections = 0
        self.in_flight = self.max_in_flight = 0
        self.dead = False
        self._faults: deque[tuple] = deque()  # (status | "drop", retry_after)
        self._die_after: int | None = None
        self._die_mode = "refuse"
        self._attempts: dict[str, int] = {}
        self._files: dict[str, tuple[str, str, bytes]] = {}
        self._batches: dict[str, _Batch] = {}
        self._ids = 0
        self._writers: set = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread: threading.Thread | None = None

    # --- knobs --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def fail_next(self, n: int, status: int = 429, retry_after: str | float | None = None) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * n)

    def drop_next(self, n: int) -> None:
        with self._lock:
            self._faults.extend([("drop", None)] * n)

    def die_after(self, k: int, mode: str = "refuse") -> None:
        """After k more chat requests: "refuse" stops listening and resets every open connection (a
        crash); "drop" keeps accepting but closes each connection unanswered (so retries are counted)."""
        assert mode in ("refuse", "drop")
        self._die_after, self._die_mode = self.chat_requests + k, mode

    def chat_bodies(self) -> list[dict]:
        return [r.json for r in self.requests if r.path.endswith("/chat/completions")]

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="fake-openai")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def _run(self, ready: threading.Event) -> None:
        self._loop = loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._listen())
        ready.set()
        try:
            loop.run_forever()
        finally:
            self._die()
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=2048)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        await self._listen()
        print(f"listening on {self.url}", flush=True)
        await self._server.serve_forever()

    def _die(self) -> None:
        self.dead = True
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    # --- HTTP ---------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while not self.dead or self._die_mode == "drop":
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        if line:
                            k, _, v = line.partition(":")
                            headers[k.strip().lower()] = v.strip()
                    if "content-length" in headers:
                        body = await reader.readexactly(int(headers["content-length"]))
                    elif headers.get("transfer-encoding", "").lower() == "chunked":
                        body = await _read_chunked(reader)
                    else:
                        body = b""
                except (
                    asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError,
                    ConnectionError,
                    ValueError,
                    asyncio.CancelledError,
                ):  # cancelled at shutdown: end quietly
                    break
                if self.record:
                    self.requests.append(Recorded(method, target, headers, body))
                try:
                    result = await self._route(method, target.split("?", 1)[0], headers, body)
                except asyncio.CancelledError:
                    break
                if result is DROP or writer.transport.is_closing():
                    writer.transport.abort()
                    break
                status, payload, extra = result
                if target.endswith("/chat/completions"):
                    self.chat_answered += 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                ctype = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
                head_out = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(data)}\r\n{extra}\r\n"
                )
                writer.write(head_out.encode("latin-1") + data)
                if len(data) > 65536:
                    await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _route(self, method: str, path: str, headers: dict, body: bytes):
        auth = headers.get("authorization", "")
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided.", "invalid_api_key"), ""
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(body, auth)
        if method == "GET" and path.endswith("/models"):
            return (
                200,
                {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]},
                "",
            )
        if method == "POST" and path.endswith("/files"):
            return 200, self._upload(headers, body), ""
        m = re.search(r"/files/([\w-]+)/content$", path)
        if method == "GET" and m and m.group(1) in self._files:
            return 200, self._files[m.group(1)][2], ""
        if method == "POST" and path.endswith("/batches"):
            return 200, self._create_batch(json.loads(body)), ""
        m = re.search(r"/batches/([\w-]+)(/cancel)?$", path)
        if m and m.group(1) in self._batches:
            b = self._batches[m.group(1)]
            if m.group(2) and method == "POST" and b.status not in ("completed", "failed", "expired"):
                b.status, b.outcome = "cancelling", "cancelled"
            elif method == "GET":
                self._poll(b)
            return 200, self._batch_json(b), ""
        return 404, _error(f"no route {method} {path}", "not_found"), ""

    async def _chat(self, body: bytes, auth: str):
        self.chat_requests += 1
        if self._die_after is not None and self.chat_requests > self._die_after:
            if self._die_mode == "refuse" and not self.dead:
                self._die()
            return DROP
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            status, retry_after = fault
            if status == "drop":
                return DROP
            extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
            return (
                status,
                _error(f"injected {status}", "rate_limit_exceeded" if status == 429 else "server_error"),
                extra,
            )
        req = json.loads(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            delay = _markers(req).get("sleep", self.delay)
            if delay:
                await asyncio.sleep(float(delay))
        finally:
            self.in_flight -= 1
        if self.dead and self._die_mode == "refuse":
            return DROP
        status, payload = self.answer(req, auth)
        return status, payload, ""

    # --- answers ------------------------------------------------------------------------------
    def answer(self, req: dict, auth: str = "") -> tuple[int, dict]:
        """(status, body) of one chat completion; also used for batch lines."""
        msgs = req.get("messages") or []
        marks = _markers(req)
        if "http" in marks:
            status = int(marks["http"])
            quote = f" (Authorization: {auth})" if self.echo_auth_in_errors else ""
            return status, _error(f"injected error {status}{quote}", "invalid_request_error")
        first = next((m.get("content", "") for m in msgs if m.get("role") == "user"), "")
        self._attempts[first] = k = self._attempts.get(first, 0) + 1
        rf = req.get("response_format") or {}
        schema = rf.get("json_schema", {}).get("schema") if rf.get("type") == "json_schema" else None
        last = next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), "")
        content, refusal, finish = None, None, "stop"
        if "refuse" in marks or self.refuse:
            refusal = "I'm sorry, I can't help with that."
        elif k <= max(self.invalid_json_first, int(marks.get("bad_json", 0))):
            content = '{"answer": "unterminated'
        elif k <= max(self.schema_violation_first, int(marks.get("bad_schema", 0))):
            content = '["not", "the", "schema"]'
        elif schema is not None and self.enforce_schema:
            content = json.dumps(instance(schema))
        else:
            content = f"echo: {last}"
        if ("length" in marks or self.truncate) and content:
            content, finish = content[: max(1, len(content) // 2)], "length"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) + 4 for m in msgs)
        completion_tokens = max(1, len(content or refusal) // 4)
        if self.record:
            self.usage_log.append((first, prompt_tokens, completion_tokens))
        self._ids += 1
        return 200, {
            "id": f"chatcmpl-{self._ids}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": req.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish,
                    "logprobs": None,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    # --- Batch API ----------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def _store(self, name: str, purpose: str, data: bytes) -> dict:
        fid = self._new_id("file")
        self._files[fid] = (name, purpose, data)
        return {
            "id": fid,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }

    def _upload(self, headers: dict, body: bytes) -> dict:
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + body
        )
        fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
        f = fields["file"]
        return self._store(
            f.get_filename() or "upload", fields["purpose"].get_content().strip(), f.get_payload(decode=True)
        )

    def _create_batch(self, req: dict) -> dict:
        data = self._files[req["input_file_id"]][2]
        lines, errors, seen = [], [], set()
        for no, raw in enumerate(data.decode().splitlines(), 1):
            try:
                line = json.loads(raw)
                ok = (
                    line["method"] == "POST"
                    and line["url"] == req["endpoint"]
                    and "body" in line
                    and line["custom_id"] not in seen
                )
                seen.add(line["custom_id"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if ok:
                lines.append(line)
            else:
                errors.append(
                    {
                        "code": "invalid_request",
                        "message": f"line {no} is not a valid batch request",
                        "line": no,
                        "param": None,
                    }
                )
        with self._lock:
            outcome = self.batch_outcomes.popleft() if self.batch_outcomes else "completed"
        b = _Batch(self._new_id("batch"), req["input_file_id"], req["endpoint"], lines, "failed" if errors else outcome)
        if errors or outcome == "failed":
            b.errors = {
                "object": "list",
                "data": errors
                or [
                    {
                        "code": "token_limit_exceeded",
                        "message": "Enqueued token limit reached.",
                        "line": None,
                        "param": None,
                    }
                ],
            }
        b.counts["total"] = len(lines)
        self._batches[b.id] = b
        return self._batch_json(b)

    def _poll(self, b: _Batch) -> None:
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return
        b.polls += 1
        if b.polls <= self.batch_polls and b.status != "cancelling":
            b.status = "in_progress" if b.outcome != "failed" else "validating"
            return
        if b.outcome == "failed":
            b.status = "failed"
            return
        keep = len(b.lines) if b.outcome == "completed" else self.batch_expire_keep
        out, err = [], []
        for line in b.lines[:keep]:
            status, body = self.answer(line["body"])
            rec = {
                "id": self._new_id("batch_req"),
                "custom_id": line["custom_id"],
                "error": None,
                "response": {"status_code": status, "request_id": self._new_id("req"), "body": body},
            }
            (out if status == 200 else err).append(json.dumps(rec))
        code = "batch_expired" if b.outcome == "expired" else "batch_cancelled"
        for line in b.lines[keep:]:  # what the real API does with requests it never ran
            err.append(
                json.dumps(
                    {
                        "id": self._new_id("batch_req"),
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": "The request was not executed."},
                    }
                )
            )
        b.counts.update(completed=len(out), failed=len(err))
        if out:
            b.output_file_id = self._store("output.jsonl", "batch_output", ("\n".join(out) + "\n").encode())["id"]
        if err:
            b.error_file_id = self._store("errors.jsonl", "batch_output", ("\n".join(err) + "\n").encode())["id"]
        b.status = b.outcome

    def _batch_json(self, b: _Batch) -> dict:
        return {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": b.errors,
            "input_file_id": b.input_file_id,
            "completion_window": "24h",
            "status": b.status,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": b.created_at,
            "request_counts": b.counts,
            "metadata": None,
        }

    def batches(self) -> list[dict]:
        return [self._batch_json(b) | {"lines": b.lines} for b in self._batches.values()]


def _markers(req: dict) -> dict[str, str]:
    first = next((m.get("content", "") for m in req.get("messages") or [] if m.get("role") == "user"), "")
    return {m.group(1): m.group(2) or "" for m in _MARKER.finditer(str(first))}


def _error(message: str, code: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readline()


def main() -> None:
    ap = argparse.ArgumentParser(description="fake OpenAI-compatible server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each chat answer")
    ap.add_argument("--record", action="store_true", help="keep every request in memory")
    args = ap.parse_args()
    server = FakeOpenAI(delay=args.delay, record=args.record, host=args.host, port=args.port)
    try:
        asyncio.run(server.serve_forever())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
