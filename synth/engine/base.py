"""The engine protocol every stage uses to hand work to workers, and the local engine (the reference).

A worker is a plain Python class (no Ray import): ``worker_cls(**init_kwargs)`` builds it once per
process (the model, the memory-mapped corpus), and ``worker(item) -> result`` does one unit of work. The
driver cuts the items (fixed shards from sorted stable ids: ``synth.engine.shards``); an engine only
decides which process runs which item, never where an item ends, so every engine gives the same bytes.

Ordered-results contract of ``map_actors``: results are yielded in ITEM ORDER, one per item, whatever
order the workers finish in; the call is lazy (a generator) and at most a bounded window of items is in
flight, so a caller may consume results as they come. An exception in a worker stops the iteration (the
Ray engine turns a dead worker or cluster into one ``ResumableFailure`` line); items already yielded
stay done, so per-item results written to storage by the workers make a rerun resume.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol


def worker_id() -> str:
    """This process, as recorded per task when no Ray worker id exists (the local engine)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class StageStats:
    tasks: int = 0
    workers: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"tasks": self.tasks, "workers": len(self.workers), "seconds": round(self.seconds, 4)}


@dataclass
class EngineStats:
    """Per label (a stage's unit of work: ``embed``, ``search``, ``llm``...): tasks run, the distinct
    worker processes that ran them, and the wall seconds the driver spent waiting on them."""

    stages: dict[str, StageStats] = field(default_factory=dict)

    def record(self, label: str, worker: str, tasks: int = 1) -> None:
        entry = self.stages.setdefault(label, StageStats())
        entry.tasks += tasks
        entry.workers.add(worker)

    def add_seconds(self, label: str, seconds: float) -> None:
        self.stages.setdefault(label, StageStats()).seconds += seconds

    def workers(self) -> int:
        return len(set().union(*(s.workers for s in self.stages.values()))) if self.stages else 0

    def as_dict(self) -> dict:
        return {label: s.as_dict() for label, s in self.stages.items()}


class RemoteSearch(Protocol):
    def search(self, searcher, query_emb, k: int, block: int) -> Iterator[tuple[int, Any, Any]]:
        """``(start, scores [b, k], rows [b, k])`` per block of ``block`` queries, in block order, ties ordered
        by ``synth.index.order_ties``: exactly what ``Searcher.search`` yields locally."""
        ...


class Engine(Protocol):
    kind: str
    distributed: bool  # False: stages keep their in-process code path (the reference)
    stats: EngineStats

    def map_actors(
        self,
        worker_cls: type,
        init_kwargs: dict,
        items: list,
        *,
        label: str,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
    ) -> Iterator[Any]:
        """``worker_cls(**init_kwargs)(item)`` for each item; results in item order (see the module doc)."""
        ...

    def encode_chunks(self, encoder_spec: dict, jobs: list[tuple[int, list[str], str]], prompt: str) -> None:
        """Encode each job ``(chunk_index, texts, path)`` and save it at ``path`` (``synth.core.files.save_array``)."""
        ...

    def searcher_remote(self, searcher) -> RemoteSearch | None:
        """An object that searches ``searcher``'s index in workers (``Searcher.remote``); None: search locally."""
        ...

    def llm_backend(self, cfg, cache_dir: Path) -> Any | None:
        """The ``synth.llm.base.Backend`` that sends ``cfg``'s requests from this engine's workers, for
        ``synth.llm.pool.ClientPool``; None: the pool builds its in-process backend. ``cache_dir`` is the
        pool's cache folder (where worker results go when the engine has no storage of its own)."""
        ...

    def report(self) -> dict: ...

    def close(self) -> None: ...


class LocalEngine:
    """Everything in this process, sequentially: one worker instance per ``map_actors`` call."""

    kind = "local"
    distributed = False

    def __init__(self, cfg: Any = None, cache_dir: str | None = None):
        self.cfg = cfg
        self.stats = EngineStats()

    def map_actors(
        self,
        worker_cls: type,
        init_kwargs: dict,
        items: Iterable,
        *,
        label: str,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
    ) -> Iterator[Any]:
        worker = None
        me = worker_id()
        for item in items:
            t0 = time.perf_counter()
            if worker is None:
                worker = worker_cls(**init_kwargs)
            result = worker(item)
            self.stats.record(label, me)
            self.stats.add_seconds(label, time.perf_counter() - t0)
            yield result

    def encode_chunks(self, encoder_spec: dict, jobs: list[tuple[int, list[str], str]], prompt: str) -> None:
        from synth.engine.workers import EmbedWorker

        for _ in self.map_actors(EmbedWorker, {"spec": encoder_spec, "prompt": prompt}, jobs, label="embed"):
            pass

    def searcher_remote(self, searcher) -> None:
        return None

    def llm_backend(self, cfg, cache_dir: Path) -> None:
        return None

    def report(self) -> dict:
        return {
            "kind": self.kind,
            "address": None,
            "workers": max(1, self.stats.workers()),
            "cluster": {"nodes": 1, "cpus": os.cpu_count() or 1, "gpus": 0},
            "start_seconds": 0.0,
            "stages": self.stats.as_dict(),
        }

    def close(self) -> None:
        pass
