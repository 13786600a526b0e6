"""LLM requests sent from engine workers: per-shard results on shared storage, and the backend that uses them.

``RemoteBackend`` is a ``synth.llm.base.Backend`` for an OpenAI-compatible endpoint whose requests go out
from the engine's workers (``Engine.map_actors``), each worker with synth's own async client
(``OpenAIBackend``: many requests in flight per actor, where Ray's HTTP processor keeps one). ``LLMClient``
above it is unchanged: it serves the SQLite cache, sends misses in budget waves and records every response
on the driver, so a rerun of a finished stage sends nothing and never reaches this module.

What this module adds is the cache across nodes. The driver sorts the requests by key and cuts fixed shards
(``llm_shard_rows``; Ray never decides where one ends); a worker appends each final response to its shard's
file under ``<storage>/llm-shards/<identity hash>/`` the moment it arrives. A worker or driver killed
mid-stage therefore loses no answer that was paid for: a rerun finds it in the store (on the driver, before
sending; in the worker, when a shard is retried) and sends only the rest. As in ``synth.llm.cache``,
transport failures are never stored, so a rerun retries them.

The API key never travels: the worker reads it from its own environment (``api_key_env``), as the local
backend does on the driver.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from synth.core.text import content_id
from synth.llm.base import BackendUnavailable, ChatRequest, ChatResponse, OnResponse, canonical, request_key
from synth.llm.config import OpenAIConfig

log = logging.getLogger("synth.llm")

SHARDS_DIR = "llm-shards"
_KEY_PREFIX = '{"key": "'  # every stored line starts so (json.dumps' default separators), then 64 hex digits
_KEY_PREFIX_BYTES = _KEY_PREFIX.encode()


def identity_folder(storage: str | Path, identity: dict) -> Path:
    """``<storage>/llm-shards/<hash of the backend identity>``: one folder per (kind, base_url, model)."""
    return Path(storage) / SHARDS_DIR / content_id(canonical(identity))


def shard_id(keys: Sequence[str]) -> str:
    """A shard named by its content (its sorted request keys): the same requests make the same shard in
    every process, so a retried shard appends to the file its first attempt wrote."""
    return content_id(*keys, n=24)


class ShardStore:
    """Final responses per shard, one JSON line each (``{"key", "response"}``), appended and flushed as each
    arrives. A line cut short by a kill is ignored on read, and the next append starts on a fresh line."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock = threading.Lock()

    def path(self, shard: str) -> Path:
        return self.folder / f"{shard}.jsonl"

    def append(self, shard: str, key: str, response: ChatResponse) -> bool:
        """Store ``response`` under ``key`` when it is final; False (nothing written) for a transport failure."""
        if not response.final:
            return False
        line = json.dumps({"key": key, "response": response.to_json()}, ensure_ascii=False) + "\n"
        path = self.path(shard)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            # O_APPEND and one write per line: a concurrent writer of the same shard never splits a line
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                if _ends_torn(fd):
                    line = "\n" + line  # close the torn line so this one parses
                os.write(fd, line.encode("utf-8"))
            finally:
                os.close(fd)
        return True

    def answered(self, keys: Sequence[str], shard: str | None = None) -> dict[str, ChatResponse]:
        """The stored responses among ``keys`` (served as cached): from one shard's file, or from every
        shard in the folder (a rerun's misses are cut into other shards than the killed run's)."""
        files = [self.path(shard)] if shard is not None else None
        return self.read(self.index(files), keys)

    def index(self, files: Sequence[Path] | None = None) -> dict[str, tuple[Path, int]]:
        """Where each stored key's line starts, in ``files`` (default: every shard file of the folder as it is
        now). Lines are told apart by their key prefix, without parsing their JSON."""
        where: dict[str, tuple[Path, int]] = {}
        start = len(_KEY_PREFIX)
        for path in files if files is not None else sorted(self.folder.glob("*.jsonl")):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            offset = 0
            for raw in data.split(b"\n"):
                if raw.startswith(_KEY_PREFIX_BYTES) and len(raw) > start + 64:
                    where.setdefault(raw[start : start + 64].decode("ascii", "replace"), (path, offset))
                offset += len(raw) + 1
        return where

    def read(self, where: dict[str, tuple[Path, int]], keys: Sequence[str]) -> dict[str, ChatResponse]:
        """The responses of ``keys`` found in ``where`` (an ``index``); a torn line is skipped."""
        by_file: dict[Path, list[tuple[int, str]]] = {}
        for key in set(keys):
            if key in where:
                path, offset = where[key]
                by_file.setdefault(path, []).append((offset, key))
        found: dict[str, ChatResponse] = {}
        for path, spots in by_file.items():
            with open(path, "rb") as f:
                for offset, key in sorted(spots):
                    f.seek(offset)
                    try:
                        entry = json.loads(f.readline())
                        if entry["key"] == key:
                            found[key] = ChatResponse.from_json(entry["response"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a kill
        return found


def _ends_torn(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


class LLMShardWorker:
    """Answers one shard per call with synth's async OpenAI client, in an engine worker (no Ray import).

    ``config`` is the backend's recipe config as JSON, with ``concurrency``, ``rpm`` and ``tpm`` already
    divided across the actors by the driver; the API key comes from this process's environment only."""

    def __init__(self, config: str, folder: str, probe: bool = False):
        from synth.llm.openai import OpenAIBackend

        self.cfg = OpenAIConfig.model_validate_json(config)
        self.backend = OpenAIBackend(self.cfg)
        self.store = ShardStore(folder)
        # the driver could not check the endpoint (no key there): this worker does, once (``probe_schema``)
        self._probe = probe
        self._unavailable: str | None = None

    def __call__(self, shard: dict) -> list[tuple[str, dict, bool]]:
        """``shard``: ``{"id", "requests": [(key, ChatRequest)]}``. Returns ``(key, response JSON, fresh)``
        per request in shard order; ``fresh`` is False for a response read back from the store."""
        sid, items = shard["id"], shard["requests"]
        stored = self.store.answered([k for k, _ in items], shard=sid)
        todo = [(k, r) for k, r in items if k not in stored]
        fresh: dict[str, ChatResponse] = {}
        if todo:

            def on_response(j: int, response: ChatResponse) -> None:
                key = todo[j][0]
                self.store.append(sid, key, response)  # before anything else: a kill now keeps it
                fresh[key] = response

            try:
                self._start()
                self.backend.generate([r for _, r in todo], on_response)
            except BackendUnavailable as e:  # no key in this worker's environment, or the probe failed
                self._unavailable = self._unavailable or f"worker: {e}"[:300]
            for k, _ in todo:
                if k not in fresh:  # transport failures: returned (the stage fails resumably), never stored
                    fresh[k] = ChatResponse(
                        None,
                        finish_reason="error",
                        attempts=0,
                        error="transport",
                        detail=self._unavailable or "the worker's client gave no answer",
                    )
        out = []
        for key, _ in items:
            if key in stored:
                out.append((key, stored[key].to_json(), False))
            elif key in fresh:
                out.append((key, fresh[key].to_json(), True))
        return out

    def _start(self) -> None:
        """Raises ``BackendUnavailable`` on every call once the endpoint failed its check here."""
        if self._unavailable is not None:
            raise BackendUnavailable(self._unavailable)
        if self._probe:
            self._probe = False
            self.backend.start()


class RemoteBackend:
    """An OpenAI-compatible endpoint reached from the engine's workers (see the module doc).

    Its ``identity()`` is the driver-side ``OpenAIBackend``'s, so request keys (and the SQLite cache) are
    the same on every engine: a warm cache from a local run serves a Ray run, and the reverse."""

    def __init__(
        self,
        cfg: OpenAIConfig,
        engine,
        storage: str | Path,
        *,
        shard_rows: int | None = None,
        actors: int | None = None,
    ):
        from synth.llm.openai import OpenAIBackend

        self.cfg = cfg
        self.kind = cfg.kind
        self.engine = engine
        self._driver = OpenAIBackend(cfg)  # identity, and the probe when the driver has the key
        ecfg = getattr(engine, "cfg", None)
        self.shard_rows = int(shard_rows or getattr(ecfg, "llm_shard_rows", None) or 64)
        self.actors = int(actors or getattr(ecfg, "actors", None) or 1)
        self.store = ShardStore(identity_folder(storage, self.identity()))
        self.probe_usage: tuple[int, int] = (0, 0)
        self._worker_probe = False
        self._stored: dict[str, tuple[Path, int]] | None = None  # the store's index, read on first use
        self.label = "llm"

    def identity(self) -> dict:
        return self._driver.identity()

    def start(self) -> None:
        """Probe from the driver when it can authenticate; else each worker probes on its first shard (keys
        may live only in the workers' environment). An endpoint the driver cannot reach stays one line."""
        if self.cfg.api_key_env and not os.environ.get(self.cfg.api_key_env):
            log.info(
                "llm: $%s is not set on the driver; the workers' environment must hold it (they check the endpoint)",
                self.cfg.api_key_env,
            )
            self._worker_probe = self.cfg.probe_schema
            return
        self._driver.start()
        self.probe_usage = self._driver.probe_usage

    def worker_config(self) -> str:
        """The config each worker gets: concurrency and rate limits split across the actors, so together
        they keep to the recipe's limits."""
        n, c = self.actors, self.cfg
        update: dict = {"concurrency": max(1, math.ceil(c.concurrency / n))}
        if c.rpm:
            update["rpm"] = max(1, c.rpm // n)
        if c.tpm:
            update["tpm"] = max(1, c.tpm // n)
        return c.model_copy(update=update).model_dump_json()

    def shards(self, keyed: list[tuple[str, int]], requests: Sequence[ChatRequest]) -> list[dict]:
        """Fixed shards of ``shard_rows`` requests, cut from the requests sorted by key (distinct keys)."""
        out = []
        for start in range(0, len(keyed), self.shard_rows):
            part = keyed[start : start + self.shard_rows]
            keys = [k for k, _ in part]
            out.append({"id": shard_id(keys), "requests": [(k, requests[i]) for k, i in part]})
        return out

    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        identity = self.identity()
        keys = [request_key(identity, r) for r in requests]
        where: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            where.setdefault(k, []).append(i)

        def answer(key: str, response: ChatResponse) -> None:
            for i in where.pop(key, ()):
                on_response(i, response)

        if self._stored is None:
            # Read once per backend: what this run's workers store later reaches the driver's cache directly.
            self._stored = self.store.index()
        for key, response in self.store.read(self._stored, list(where)).items():
            answer(key, response)  # answered by a worker of a killed run: served, never sent again
        if not where:
            return
        keyed = sorted((k, idx[0]) for k, idx in where.items())
        shards = self.shards(keyed, requests)
        log.info("llm: %d requests to send in %d shards of <= %d", len(keyed), len(shards), self.shard_rows)
        init = {"config": self.worker_config(), "folder": str(self.store.folder), "probe": self._worker_probe}
        results = self.engine.map_actors(LLMShardWorker, init, shards, label=self.label)
        try:
            for result in results:
                for key, data, fresh in result:
                    answer(key, ChatResponse(**data) if fresh else ChatResponse.from_json(data))
                if should_stop():
                    break
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        self._driver.close()
