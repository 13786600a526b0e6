"""The chat-completions wire, apart from any session: a completion body's fields, what an HTTP status
means for a request (its error and whether to retry), the server's error text and ``Retry-After``, a reply
body read within ``max_reply_bytes``, and the proxy a URL goes through. ``OpenAIBackend`` (``openai.py``) and
the batch API client (``batch.py``) share them.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
import urllib.parse
import urllib.request

import aiohttp

from synth.core.limits import limit, over_limit


def parse_completion(data: dict) -> tuple[str | None, str | None, str | None, str | None, int, int]:
    """(text, finish_reason, refusal, model, prompt tokens, completion tokens) of a chat completion body."""
    choice = data["choices"][0]
    message = choice.get("message") or {}
    usage = data.get("usage") or {}
    text = message.get("content")
    if isinstance(text, list):  # content parts
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    return (
        text,
        choice.get("finish_reason"),
        message.get("refusal"),
        data.get("model"),
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )


def classify_status(status: int) -> tuple[str, bool]:
    """(ChatResponse error, retryable) for an HTTP status other than 200."""
    if status == 429:
        return "rate_limited", True
    if status == 408:
        return "timeout", True
    if status == 409 or status >= 500:
        return "server_error", True
    if status in (400, 413, 422):
        return "bad_request", False
    # 401/403/404 and the like: the setup is wrong, not the request; a rerun with a fixed setup must
    # retry, so this is a transport error (never cached), without retries.
    return "transport", False


def error_message(raw: bytes) -> str:
    try:
        err = json.loads(raw).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        if msg:
            return str(msg)[:200]
    except (ValueError, AttributeError):
        pass
    return raw[:200].decode("utf-8", "replace")


def retry_after_seconds(headers) -> float | None:
    """Seconds from ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
            return max(seconds, 0.0) if math.isfinite(seconds) else math.inf  # "nan" / "inf": never sleep on it
        except ValueError:
            if name == "retry-after":
                try:
                    when = email.utils.parsedate_to_datetime(value)
                    return max(when.timestamp() - time.time(), 0.0)
                except (TypeError, ValueError, IndexError):
                    return None
    return None


async def read_bounded(resp: aiohttp.ClientResponse, where: str) -> bytes:
    """The body of ``resp``, refused with one line past SYNTH_MAX_REPLY_BYTES. A plain body whose
    Content-Length fits is read at once (aiohttp stops at Content-Length); a compressed or chunked one is
    counted as it arrives, decompressed, so a small gzip bomb is caught too."""
    bound = limit("max_reply_bytes")
    length = resp.content_length
    if length is not None and length > bound:
        raise over_limit("max_reply_bytes", f"{where}: reply", f"Content-Length {length:,}")
    if length is not None and not resp.headers.get("Content-Encoding"):
        return await resp.read()
    chunks, size = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > bound:
            raise over_limit("max_reply_bytes", f"{where}: reply", f"more than {bound:,} bytes received")
        chunks.append(chunk)
    return b"".join(chunks)


def is_loopback(url: str) -> bool:
    """A server on this machine, which is never behind the proxy."""
    return (urllib.parse.urlsplit(url).hostname or "") in ("", "localhost", "127.0.0.1", "::1")


def env_proxy(url: str) -> str | None:
    """HTTP(S)_PROXY unless NO_PROXY covers the host, like the openai library; resolved once, because
    aiohttp's ``trust_env`` looks it up in a thread on every request."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if is_loopback(url) or urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
