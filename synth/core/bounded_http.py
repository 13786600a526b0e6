"""An httpx2 transport that bounds what a server can make a client do: how long one call takes, start to
end, and how many bytes one reply may hold. huggingface_hub and the openai library both speak httpx2, so
the Hub push and the Batch API share it.

Why a deadline at the socket: httpx's timeouts are per read, so a server that trickles a byte a second
never trips them. Here every socket read, write and connect of a call gets at most the time left until
the call's deadline (a thread-local, set while the call runs and while its body is read), so a trickle
ends at the deadline whatever the per-read timeout says.
"""

from __future__ import annotations

import contextlib
import threading
import time
import zlib

import httpcore2
import httpx2

from synth.core.limits import limit

_local = threading.local()


class CallTimeout(Exception):
    """One call did not finish before its deadline. Not an httpx timeout on purpose: callers such as
    huggingface_hub retry those with backoff, which would multiply the wait."""

    def __init__(self, call: str, seconds: float):
        super().__init__(f"no answer to {call} within {round(seconds, 1):g}s")  # the limit, not its upload allowance
        self.call, self.seconds = call, seconds


class ReplyTooLarge(Exception):
    """One reply passed the byte bound; ``got`` says by how much, for the one-line error."""

    def __init__(self, call: str, got: str):
        super().__init__(f"the reply to {call} is too large ({got})")
        self.call, self.got = call, got


@contextlib.contextmanager
def _deadline(deadline: float | None):
    previous = getattr(_local, "deadline", None)
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = previous


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left before this thread's deadline; ``error`` once it has passed."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    def __init__(self, inner: httpcore2.NetworkStream):
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, _left(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _left(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        stream = self.inner.start_tls(ssl_context, server_hostname, _left(timeout, httpcore2.ConnectTimeout))
        return _DeadlineStream(stream)

    def get_extra_info(self, info: str):
        return self.inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    def __init__(self, inner: httpcore2.NetworkBackend):
        self.inner = inner

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self.inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        timeout = _left(timeout, httpcore2.ConnectTimeout)
        return _DeadlineStream(self.inner.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _BoundedBody(httpx2.SyncByteStream):
    """A reply body read under the call's deadline, refused past ``max_bytes`` (decompressed bytes when
    the server compressed it anyway: a small gzip bomb must not pass)."""

    def __init__(self, inner, call: str, deadline: float | None, seconds: float | None, max_bytes: int, encoding: str):
        self.inner, self.call, self.deadline, self.seconds, self.max_bytes = inner, call, deadline, seconds, max_bytes
        self.inflate = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None

    def __iter__(self):
        chunks = iter(self.inner)
        size = 0
        while True:
            with _deadline(self.deadline):
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except httpx2.TimeoutException as e:
                    raise CallTimeout(self.call, self.seconds or 0.0) from e
            size += self._decoded_size(chunk)
            if size > self.max_bytes:
                raise ReplyTooLarge(self.call, f"more than {self.max_bytes:,} bytes received")
            yield chunk

    def _decoded_size(self, chunk: bytes) -> int:
        if self.inflate is None:
            return len(chunk)
        try:  # decoded a bounded piece at a time, only to count; httpx decodes the body itself
            n = len(self.inflate.decompress(chunk, self.max_bytes + 1))
            while self.inflate.unconsumed_tail and n <= self.max_bytes:
                n += len(self.inflate.decompress(self.inflate.unconsumed_tail, self.max_bytes + 1))
            return n
        except zlib.error:
            self.inflate = None  # not what it says it is: httpx reports that; count the raw bytes
            return len(chunk)

    def close(self) -> None:
        self.inner.close()


class BoundedTransport(httpx2.BaseTransport):
    """``httpx2.HTTPTransport`` with each call ending by ``seconds`` (None: no deadline) after it starts,
    plus upload time, and each reply at most ``max_bytes``. Raises ``CallTimeout`` / ``ReplyTooLarge``;
    ``last_call`` is the "METHOD /path" of the latest call, for error messages."""

    def __init__(self, seconds: float | None, max_bytes: int, **transport_kw):
        self.seconds, self.max_bytes = seconds, max_bytes
        self.inner = httpx2.HTTPTransport(**transport_kw)
        pool = self.inner._pool  # httpx2 takes no network backend argument; the pool keeps it here
        pool._network_backend = _DeadlineBackend(pool._network_backend)
        self.last_call: str | None = None

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        call = f"{request.method} {request.url.path}"
        self.last_call = call
        deadline = seconds = None
        if self.seconds is not None:
            upload = int(request.headers.get("content-length") or 0)
            seconds = self.seconds + upload / limit("min_upload_rate")  # N bytes up: N / rate more seconds
            deadline = time.monotonic() + seconds
            given = request.extensions.get("timeout") or {}
            request.extensions["timeout"] = {
                k: seconds if given.get(k) is None else min(given[k], seconds)
                for k in ("connect", "read", "write", "pool")
            }
        # asked plainly, so that the byte bound counts what the caller gets
        request.headers["Accept-Encoding"] = "identity"
        try:
            with _deadline(deadline):
                response = self.inner.handle_request(request)
        except httpx2.TimeoutException as e:
            raise CallTimeout(call, seconds or 0.0) from e
        length = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if length.isdigit() and int(length) > self.max_bytes:
            response.close()
            raise ReplyTooLarge(call, f"Content-Length {int(length):,}")
        response.stream = _BoundedBody(response.stream, call, deadline, seconds, self.max_bytes, encoding)
        return response

    def close(self) -> None:
        self.inner.close()
