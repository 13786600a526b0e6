"""``Searcher.remote`` on the Ray engine: query blocks to an actor pool of ``SearchWorker``s. No Ray import:
the pool is the engine's (``RayEngine.actors``), the waits its ``ordered`` (with their deadline)."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from synth.engine.ray_waits import IN_FLIGHT_PER_ACTOR
from synth.engine.shards import merge_topk, split_ranges
from synth.engine.workers import SearchWorker


class RaySearch:
    """``Searcher.remote`` on Ray: query blocks to an actor pool of ``SearchWorker``s (block i to actor
    i mod n), or with ``corpus_shards`` > 1 each block to every shard's actor and the lists merged."""

    def __init__(self, engine, searcher, shards: int):
        self.engine = engine
        self.searcher = searcher
        self.pool: list = []
        self.shards = shards
        self.busy = False  # a search is iterating: its pool must stay

    def cpus(self) -> float:
        return len(self.pool) * self.engine.cfg.actor_cpus

    def release(self) -> None:
        """Stop the pool's actors; the next search opens it again."""
        pool, self.pool = self.pool, []
        self.engine._kill(pool)

    def _open(self) -> None:
        import faiss

        if self.pool:
            return
        engine, s = self.engine, self.searcher
        corpus = s.corpus_emb
        path = getattr(corpus, "filename", None)
        if path is not None and np.load(path, mmap_mode="r").shape != corpus.shape:
            path = None  # a view of a larger file: hand the rows themselves over
        base = {"matrix_path": str(path)} if path is not None else {"matrix": np.ascontiguousarray(corpus)}
        device = getattr(s, "device", "cpu")
        gpus = engine.gpus_per_actor() if device == "cuda" else 0
        index = getattr(s, "_index", None)
        if index is not None:
            cpu_index = faiss.index_gpu_to_cpu(index) if device == "cuda" else index
            base["index_bytes"] = faiss.serialize_index(cpu_index).tobytes()
        base["device"] = device
        base["threads"] = faiss.omp_get_max_threads()  # the driver's: the same bits (see synth.engine.workers)
        with engine.failures("search"):
            if self.shards > 1:
                ranges = split_ranges(corpus.shape[0], self.shards)
                self.pool = [engine.actors(SearchWorker, {**base, "row_range": r}, 1, num_gpus=gpus)[0] for r in ranges]
            else:
                self.pool = engine.actors(SearchWorker, base, engine.cfg.actors, num_gpus=gpus)
        engine._searches[id(self)] = self

    def search(self, searcher, query_emb, k: int, block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        self._open()
        t0 = time.perf_counter()
        starts = range(0, len(query_emb), block)
        if self.shards > 1:
            calls = ((self.pool, (s, np.ascontiguousarray(query_emb[s : s + block], np.float32), k)) for s in starts)
            window = IN_FLIGHT_PER_ACTOR
        else:
            n = len(self.pool)
            calls = (
                ([self.pool[i % n]], (s, np.ascontiguousarray(query_emb[s : s + block], np.float32), k))
                for i, s in enumerate(starts)
            )
            window = IN_FLIGHT_PER_ACTOR * n
        self.busy = True
        try:
            for parts in self.engine.ordered(calls, "search", window):
                start = parts[0][0]
                if len(parts) == 1:
                    _, scores, rows = parts[0]
                else:
                    scores, rows = merge_topk([(p[1], p[2]) for p in parts], k)
                searcher.info.search_seconds += time.perf_counter() - t0
                yield start, scores, rows
                t0 = time.perf_counter()
        finally:
            self.busy = False
