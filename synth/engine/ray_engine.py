"""The Ray engine: THE ONLY MODULE THAT IMPORTS RAY; every Ray call of synth lives here.

What runs where: embedding chunks go through a Ray Data actor pool (``map_batches`` with a class,
``compute=ActorPoolStrategy(size=actors)``, one batch = one chunk the driver cut) that writes each chunk
to the embedding cache (shared storage); the driver assembles them as the local path does. Search blocks
go to an actor pool of ``SearchWorker``s over the memory-mapped corpus (or corpus shards whose top-k lists
are merged); ``map_actors`` (the LLM stages) runs any plain worker class in an ordered actor pool.

The cluster: ``address: local`` starts a loopback cluster (usage stats and dashboard off, ``num_cpus``
above the real count so fractional actors never deadlock a small machine) on first use and stops it on
``close``; ``auto`` / ``host:port`` / ``ray://`` join a running cluster and only disconnect. A Ray failure
(a worker, actor or node died, the cluster is unreachable) becomes one ``ResumableFailure`` line: finished
chunks and shards are on storage, so a rerun resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np

from synth.core.errors import ResumableFailure, UserError
from synth.engine.base import EngineStats
from synth.engine.shards import merge_topk, split_ranges
from synth.engine.workers import EmbedWorker, SearchWorker

log = logging.getLogger("synth.engine")

IN_FLIGHT_PER_ACTOR = 2  # items queued per actor: one computing, one arriving


def _worker_id() -> str:
    import ray

    return ray.get_runtime_context().get_worker_id()


class _Host:
    """An actor holding one plain worker (``worker_cls(**init_kwargs)``); ``run`` returns the result with
    the id of the Ray worker process that computed it and the seconds it took."""

    def __init__(self, worker_cls: type, init_kwargs: dict):
        self.worker = worker_cls(**init_kwargs)
        self.wid = _worker_id()

    def run(self, item):
        t0 = time.perf_counter()
        result = self.worker(item)
        return self.wid, result, time.perf_counter() - t0


class EmbedActor:
    """Ray Data's callable class for embedding: one batch is one chunk ``{chunk, texts (pickled), path}``."""

    def __init__(self, spec: dict, prompt: str):
        self.worker = EmbedWorker(spec, prompt)
        self.wid = _worker_id()

    def __call__(self, batch: dict) -> dict:
        out = [
            self.worker((int(c), pickle.loads(t), str(p)))
            for c, t, p in zip(batch["chunk"], batch["texts"], batch["path"])
        ]
        return {
            "chunk": np.asarray([o["chunk"] for o in out], np.int64),
            "worker": np.asarray([self.wid] * len(out)),
            "seconds": np.asarray([o["seconds"] for o in out], np.float64),
        }


@contextmanager
def _stderr_muted():
    """File descriptor 2 to /dev/null while Ray connects: its C++ core prints a line there when it reads
    RAY_BACKEND_LOG_LEVEL. Errors of ``ray.init`` still arrive, as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


class RayEngine:
    kind = "ray"
    distributed = True

    def __init__(self, cfg, cache_dir: str | None = None):
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.stats = EngineStats()
        self.start_seconds = 0.0
        self._ray = None
        self._own_cluster = False  # this engine started the cluster: stop it on close
        self._connected = False  # this engine connected the driver: disconnect on close
        self._searches: dict[int, _RaySearch] = {}
        self._cluster: dict = {}

    # -- the cluster --------------------------------------------------------------------------------------

    def ray(self):
        """The ``ray`` module, connected (started lazily: a run with nothing to distribute starts nothing)."""
        if self._ray is not None:
            return self._ray
        t0 = time.perf_counter()
        if self.cfg.address == "local":
            # A cluster synth starts for itself listens on loopback only: Ray binds the machine's network
            # address unless multi-node clusters are off (read when ray is first imported).
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise UserError('engine.kind: ray needs the ray extra: pip install "synth[ray]"') from None
        address = self.cfg.address
        if not ray.is_initialized():
            # Ray's C++ core logs to the driver's stderr (an error line for every Ray Data actor pool, whose
            # actors restart with their arguments in the object store); synth reports failures itself, in one
            # line. Set RAY_BACKEND_LOG_LEVEL to see them.
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
            quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
            try:
                if address == "local":
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                    with _stderr_muted():
                        ray.init(
                            address="local",
                            num_cpus=self.cfg.num_cpus or 4 * (os.cpu_count() or 1),
                            include_dashboard=False,
                            _node_ip_address="127.0.0.1",
                            **quiet,
                        )
                    self._own_cluster = True
                else:
                    with _stderr_muted():
                        ray.init(address=address, **quiet)
                self._connected = True
            except (ConnectionError, TimeoutError, RuntimeError) as e:
                raise ResumableFailure(
                    f"ray: cannot reach the cluster at engine.address {address!r} ({_first_line(e)}) during start"
                ) from None
        import ray.data

        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = False
        data_ctx.enable_operator_progress_bars = False
        data_ctx.print_on_execution_start = False
        data_ctx.enable_auto_log_stats = False
        data_ctx.verbose_stats_logs = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        resources = ray.cluster_resources()
        self._cluster = {
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive")),
            "cpus": float(resources.get("CPU", 0)),
            "gpus": float(resources.get("GPU", 0)),
        }
        self._ray = ray
        self.start_seconds = time.perf_counter() - t0
        log.info("ray cluster %s: %s (%.1fs to connect)", address, self._cluster, self.start_seconds)
        return ray

    def gpus_per_actor(self) -> float:
        if self.cfg.actor_gpus is not None:
            return self.cfg.actor_gpus
        return 1.0 if self._cluster.get("gpus", 0) > 0 else 0.0

    @contextmanager
    def failures(self, stage: str):
        """Ray's failures as one line: a worker's ``UserError`` as itself; a dead worker, actor, node or
        cluster as a ``ResumableFailure``; any other worker exception as the exception it raised."""
        ray = self.ray()
        try:
            yield
        except ray.exceptions.RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, UserError):
                raise cause from None
            if cause is None or isinstance(cause, ray.exceptions.RayError):
                raise self._resumable(cause or e, stage) from None
            raise cause from None
        except ray.exceptions.RayError as e:
            raise self._resumable(e, stage) from None

    @staticmethod
    def _resumable(error: BaseException, stage: str) -> ResumableFailure:
        return ResumableFailure(
            f"ray: {type(error).__name__}: {_first_line(error)} during {stage}; "
            "finished shards are kept, rerun to resume"
        )

    # -- the protocol -------------------------------------------------------------------------------------

    def actors(self, worker_cls: type, init_kwargs: dict, n: int, num_cpus=None, num_gpus=None) -> list:
        """``n`` actors each holding ``worker_cls(**init_kwargs)`` (the kwargs put in the object store once).
        A dead actor is restarted and its item retried once: workers are idempotent (their results are
        keyed files or pure functions)."""
        ray = self.ray()
        host = ray.remote(_Host).options(
            num_cpus=self.cfg.actor_cpus if num_cpus is None else num_cpus,
            num_gpus=0 if num_gpus is None else num_gpus,
            max_restarts=1,
            max_task_retries=1,
        )
        kwargs_ref = ray.put(init_kwargs)
        return [host.remote(worker_cls, kwargs_ref) for _ in range(n)]

    def ordered(self, calls: Iterable[tuple[list, Any]], label: str, window: int) -> Iterator[list]:
        """Submit ``(actors, item)`` calls with at most ``window`` in flight; yield each call's results
        (one per actor it went to) in submission order."""
        ray = self.ray()
        pending: deque = deque()
        calls = iter(calls)
        t0 = time.perf_counter()
        with self.failures(label):
            while True:
                while len(pending) < window:
                    nxt = next(calls, None)
                    if nxt is None:
                        break
                    actors, item = nxt
                    item_ref = ray.put(item) if len(actors) > 1 else item
                    pending.append([a.run.remote(item_ref) for a in actors])
                if not pending:
                    break
                done = ray.get(pending.popleft())
                for wid, _, _ in done:
                    self.stats.record(label, wid)
                self.stats.add_seconds(label, time.perf_counter() - t0)
                yield [r for _, r, _ in done]
                t0 = time.perf_counter()

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
        """Results in item order (the contract of ``synth.engine.base``): item i goes to actor i mod n."""
        items = list(items)
        if not items:
            return
        n = min(self.cfg.actors, len(items))
        with self.failures(label):
            pool = self.actors(worker_cls, init_kwargs, n, num_cpus, num_gpus)
        try:
            calls = (([pool[i % n]], item) for i, item in enumerate(items))
            for results in self.ordered(calls, label, IN_FLIGHT_PER_ACTOR * n):
                yield results[0]
        finally:
            self._kill(pool)

    def encode_chunks(self, encoder_spec: dict, jobs: list[tuple[int, list[str], str]], prompt: str) -> None:
        """Each job is one Ray Data row and one batch; actors save the chunk files themselves."""
        if not jobs:
            return
        ray = self.ray()  # with ray.data imported
        rows = [{"chunk": int(i), "texts": pickle.dumps(list(texts)), "path": str(path)} for i, texts, path in jobs]
        t0 = time.perf_counter()
        with self.failures("embed"):
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                EmbedActor,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=min(self.cfg.actors, len(rows))),
                num_cpus=self.cfg.actor_cpus,
                num_gpus=self.gpus_per_actor(),
                fn_constructor_kwargs={"spec": encoder_spec, "prompt": prompt},
            )
            done = set()
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for chunk, wid in zip(batch["chunk"].tolist(), batch["worker"].tolist()):
                    done.add(chunk)
                    self.stats.record("embed", str(wid))
        self.stats.add_seconds("embed", time.perf_counter() - t0)
        missing = sorted({int(j[0]) for j in jobs} - done)
        if missing:
            raise ResumableFailure(
                f"ray: {len(missing)} embedding chunks came back missing during embed; "
                "finished shards are kept, rerun to resume"
            )

    def vllm_generate(self, config: dict, rows: list[dict]) -> Iterator[dict]:
        """``ray.data.llm`` batch inference with vLLM, one engine per actor (GPUs per the config):
        ``config`` is the keyword arguments of ``vLLMEngineProcessorConfig``
        (``synth.engine.vllm_rows.processor_config``), ``rows`` the input rows (``vllm_rows.request_row``,
        each carrying its request ``key``). Yields the output rows (``vllm_rows.output_fields``, or a row
        Ray failed, with ``__inference_error__``) as they finish, in any order. The driver cut the blocks:
        one block per ``batch_size`` rows in key order."""
        if not rows:
            return
        ray = self.ray()  # with ray.data imported
        try:
            from ray.data.llm import build_processor, vLLMEngineProcessorConfig
        except ImportError as e:
            raise UserError(
                f'llm.kind: vllm on engine.kind: ray needs Ray Data LLM and vllm: pip install "ray[llm]==2.60.*" '
                f"({_first_line(e)})"
            ) from None
        from synth.engine.vllm_rows import output_fields

        def postprocess(row: dict) -> dict:
            return {**output_fields(row), "worker": _worker_id()}

        batch = max(1, int(config.get("batch_size") or 64))
        t0 = time.perf_counter()
        with self.failures("llm"):
            processor = build_processor(vLLMEngineProcessorConfig(**config), postprocess=postprocess)
            ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
            for row in processor(ds).iter_rows():
                self.stats.record("llm", str(row.get("worker") or "ray.data.llm"))
                yield row
        self.stats.add_seconds("llm", time.perf_counter() - t0)

    def searcher_remote(self, searcher) -> "_RaySearch":
        if self.cfg.corpus_shards > 1 and searcher.factory != "Flat":
            raise UserError(
                f"engine.corpus_shards: {self.cfg.corpus_shards} corpus shards need exact search "
                f"(index.factory Flat); the index is {searcher.factory}"
            )
        return _RaySearch(self, searcher)

    def report(self) -> dict:
        address = self.cfg.address
        if address.startswith("ray://"):
            address = "ray://" + address[len("ray://") :].rsplit("@", 1)[-1]  # no credentials in a report
        return {
            "kind": self.kind,
            "address": address,
            "workers": self.stats.workers(),
            "cluster": dict(self._cluster) or {"nodes": 0, "cpus": 0.0, "gpus": 0.0},
            "start_seconds": round(self.start_seconds, 4),
            "stages": self.stats.as_dict(),
        }

    def _kill(self, pool: list) -> None:
        if self._ray is None:
            return
        for actor in pool:
            try:
                self._ray.kill(actor)
            except Exception:  # already dead, or the cluster is gone: nothing left to free
                pass

    def close(self) -> None:
        for search in self._searches.values():
            self._kill(search.pool)
        self._searches.clear()
        if self._ray is not None and self._connected and self._ray.is_initialized():
            # a cluster this engine started stops with it; one it joined only loses this driver
            self._ray.shutdown()
        self._ray = None


class _RaySearch:
    """``Searcher.remote`` on Ray: query blocks to an actor pool of ``SearchWorker``s (block i to actor
    i mod n), or with ``corpus_shards`` > 1 each block to every shard's actor and the lists merged."""

    def __init__(self, engine: RayEngine, searcher):
        self.engine = engine
        self.searcher = searcher
        self.pool: list = []
        self.shards = engine.cfg.corpus_shards

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
        for parts in self.engine.ordered(calls, "search", window):
            start = parts[0][0]
            if len(parts) == 1:
                _, scores, rows = parts[0]
            else:
                scores, rows = merge_topk([(p[1], p[2]) for p in parts], k)
            searcher.info.search_seconds += time.perf_counter() - t0
            yield start, scores, rows
            t0 = time.perf_counter()
