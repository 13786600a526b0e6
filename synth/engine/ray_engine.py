"""The Ray engine: THE ONLY MODULE THAT IMPORTS RAY; every Ray call of synth lives here.

What runs where: embedding chunks go through a Ray Data actor pool (``map_batches`` with a class,
``compute=ActorPoolStrategy(size=actors)``, one batch = one chunk the driver cut) that writes each chunk
to the embedding cache (shared storage); the driver assembles them as the local path does. Search blocks
go to an actor pool of ``SearchWorker``s over the memory-mapped corpus (or corpus shards whose top-k lists
are merged; ``synth.engine.ray_search``); ``map_actors`` (the LLM stages) runs any plain worker class in an
ordered actor pool.

The cluster: ``address: local`` starts a loopback cluster (usage stats and dashboard off, ``num_cpus``
above the real count so fractional actors never deadlock a small machine) on first use and stops it on
``close``; ``auto`` / ``host:port`` / ``ray://`` join a running cluster and only disconnect. ``auto`` is
the explicit wish to join whatever cluster Ray finds (RAY_ADDRESS, or one started on this machine, maybe
by another job): synth joins it and says so in one line (its address, resources and what is free now).

Nothing waits without end (``synth.engine.ray_start``, ``synth.engine.ray_waits``): a join gives up after
``ray_start_timeout`` seconds naming ``engine.address``; settings the cluster can never run (an actor
larger than every node, more actors or corpus shards at once than it has CPUs) are refused when the
cluster is first reached; more corpus shards than corpus rows are cut to one row each, with a notice;
a stage in which no task finished for ``ray_stall_timeout`` seconds stops in one line saying what it
waited for; Ray's SIGTERM handler is replaced by the driver's again after ``ray.init``; ``close`` waits
a bounded time. A Ray failure (a worker, actor or node died, an object was lost, the cluster is
unreachable) becomes one ``ResumableFailure`` line: finished chunks and shards are on storage, so a
rerun resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from synth.core.errors import ResumableFailure, UserError
from synth.engine.base import EngineStats
from synth.engine.ray_start import (
    check_fits,
    check_socket_folder,
    first_line,
    join_with_deadline,
    node_resources,
    say_joined,
    shutdown_with_deadline,
    signals_kept,
    stderr_muted,
)
from synth.engine.ray_waits import (
    IN_FLIGHT_PER_ACTOR,
    Stall,
    actors_waiting,
    get_with_deadline,
    iterate_with_deadline,
    root_cause,
)
from synth.engine.workers import EmbedWorker

if TYPE_CHECKING:
    from synth.engine.ray_search import RaySearch

log = logging.getLogger("synth.engine")


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


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError('engine.kind: ray needs the ray extra: pip install "synth[ray]"') from None
    return ray


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
        self._searches: dict[int, Any] = {}
        self._started: dict[int, tuple] = {}  # id(actor) -> (its __ray_ready__ ref, CPUs, GPUs)
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
        # Ray's C++ core logs to the driver's stderr (an error line for every Ray Data actor pool, whose
        # actors restart with their arguments in the object store); synth reports failures itself, in one
        # line. Set RAY_BACKEND_LOG_LEVEL to see them.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray = _import_ray()
        address = self.cfg.address
        if not ray.is_initialized():
            self._connect(ray, address)
        import ray.data

        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = False
        data_ctx.enable_operator_progress_bars = False
        data_ctx.print_on_execution_start = False
        data_ctx.enable_auto_log_stats = False
        data_ctx.verbose_stats_logs = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        with self.failures("start"):
            nodes = node_resources(ray)
        self._cluster = {
            "nodes": len(nodes),
            "cpus": float(sum(n.get("CPU", 0) for n in nodes)),
            "gpus": float(sum(n.get("GPU", 0) for n in nodes)),
        }
        self._ray = ray  # set before the checks: a refused engine still stops the cluster it started on close
        self.start_seconds = time.perf_counter() - t0
        log.info("ray cluster %s: %s (%.1fs to connect)", address, self._cluster, self.start_seconds)
        check_fits(self.cfg, nodes, address)
        if address == "auto" and not self._own_cluster:
            say_joined(ray, nodes)
        return ray

    def _connect(self, ray, address: str) -> None:
        """Start the loopback cluster, or join ``address`` within ``ray_start_timeout`` (``synth.engine.ray_start``)."""
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        with signals_kept():
            if address == "local":
                check_socket_folder()
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                # Ray starts its workers at nice 15: on a busy machine they then get ~3 % of a core beside
                # any normal process (measured: an embedding pool finishing no chunk in 15 min beside one
                # benchmark). The workers of the run's own cluster do the run's work: the driver's priority.
                os.environ.setdefault("RAY_worker_niceness", "0")
                try:
                    with stderr_muted():
                        ray.init(
                            address="local",
                            num_cpus=int(self.cfg.num_cpus or 4 * (os.cpu_count() or 1)),
                            include_dashboard=False,
                            _node_ip_address="127.0.0.1",
                            **quiet,
                        )
                except (ConnectionError, TimeoutError, RuntimeError, OSError, ValueError) as e:
                    raise ResumableFailure(f"ray: cannot start a local cluster ({first_line(e)})") from None
                self._own_cluster = True
            else:
                with stderr_muted():
                    join_with_deadline(ray, address, lambda: ray.init(address=address, **quiet))
        self._connected = True

    def gpus_per_actor(self) -> float:
        if self.cfg.actor_gpus is not None:
            return self.cfg.actor_gpus
        return 1.0 if self._cluster.get("gpus", 0) > 0 else 0.0

    @contextmanager
    def failures(self, stage: str):
        """Ray's failures as one line: a worker's ``UserError`` as itself; a dead worker, actor, node or
        cluster, a lost object, a Ray Data system error or a lost connection as a ``ResumableFailure``; any
        other worker exception as the exception it raised."""
        ray = _import_ray()
        import ray.data.exceptions as data_errors

        try:
            yield
        except ray.exceptions.RayError as e:  # first: a worker's exception arrives as RayTaskError(<its class>)
            cause = root_cause(ray, e)
            if isinstance(cause, UserError):
                raise cause from None
            if isinstance(cause, ray.exceptions.RayError):
                raise self._resumable(cause, stage) from None
            raise cause from None
        except (data_errors.SystemException, data_errors.ExecutionTimeoutError, ConnectionError, TimeoutError) as e:
            # Ray Data's own failures, or the GCS or a raylet gone under the driver
            raise self._resumable(e, stage) from None

    @staticmethod
    def _resumable(error: BaseException, stage: str) -> ResumableFailure:
        return ResumableFailure(
            f"ray: {type(error).__name__}: {first_line(error)} during {stage}; "
            "finished shards are kept, rerun to resume"
        )

    # -- the protocol -------------------------------------------------------------------------------------

    def actors(self, worker_cls: type, init_kwargs: dict, n: int, num_cpus=None, num_gpus=None) -> list:
        """``n`` actors each holding ``worker_cls(**init_kwargs)`` (the kwargs put in the object store once).
        A dead actor is restarted and its item retried once: workers are idempotent (their results are
        keyed files or pure functions)."""
        ray = self.ray()
        cpus = self.cfg.actor_cpus if num_cpus is None else num_cpus
        gpus = 0 if num_gpus is None else num_gpus
        self._make_room(n * cpus)
        host = ray.remote(_Host).options(num_cpus=cpus, num_gpus=gpus, max_restarts=1, max_task_retries=1)
        kwargs_ref = ray.put(init_kwargs)
        pool = [host.remote(worker_cls, kwargs_ref) for _ in range(n)]
        for actor in pool:  # ready once constructed: what a stalled stage reports as "not started"
            self._started[id(actor)] = (actor.__ray_ready__.remote(), cpus, gpus)
        return pool

    def _make_room(self, cpus: float) -> None:
        """Search pools stay up between searches (their index loaded); when a new pool would not fit beside
        them, the idle ones go (and reopen on the next search) rather than leave the new pool waiting."""
        held = sum(s.cpus() for s in self._searches.values())
        if held and held + cpus > self._cluster.get("cpus", 0) + 1e-9:
            for search in self._searches.values():
                if not search.busy:
                    search.release()

    def _waiting_on(self, actors: dict) -> Callable[[], str]:
        def describe_wait() -> str:
            started = [self._started[key] for key in actors if key in self._started]
            if not started:
                return ""
            ready = [ref for ref, _, _ in started]
            return actors_waiting(self._ray, ready, started[0][1], started[0][2])

        return describe_wait

    def ordered(self, calls: Iterable[tuple[list, Any]], label: str, window: int) -> Iterator[list]:
        """Submit ``(actors, item)`` calls with at most ``window`` in flight; yield each call's results
        (one per actor it went to) in submission order. A wait with no task finishing for
        ``ray_stall_timeout`` seconds stops the stage with one line (``synth.engine.ray_waits``)."""
        ray = self.ray()
        pending: deque = deque()
        calls = iter(calls)
        used: dict = {}
        stall = Stall(label, "tasks", waiting_on=self._waiting_on(used))
        t0 = time.perf_counter()
        with self.failures(label):
            while True:
                while len(pending) < window:
                    nxt = next(calls, None)
                    if nxt is None:
                        break
                    actors, item = nxt
                    used.update((id(a), a) for a in actors)
                    item_ref = ray.put(item) if len(actors) > 1 else item
                    pending.append([a.run.remote(item_ref) for a in actors])
                if not pending:
                    break
                head = pending.popleft()
                done = get_with_deadline(ray, head, stall, lambda: [ref for call in pending for ref in call])
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
        """Each job is one Ray Data row and one batch; actors save the chunk files themselves. A killed
        actor is restarted once and its chunk retried once (Ray Data's default is without end); a chunk
        that never comes back stops the stage after ``ray_stall_timeout`` seconds, in one line."""
        if not jobs:
            return
        ray = self.ray()  # with ray.data imported
        rows = [{"chunk": int(i), "texts": pickle.dumps(list(texts)), "path": str(path)} for i, texts, path in jobs]
        size = min(self.cfg.actors, len(rows))
        gpus = self.gpus_per_actor()
        self._make_room(size * self.cfg.actor_cpus)

        def waiting_on() -> str:
            free = ray.available_resources()
            return (
                f"a Ray Data pool of {size} EmbedActor actors, each needs {self.cfg.actor_cpus:g} CPUs and {gpus:g} "
                f"GPUs; cluster free: {free.get('CPU', 0):g} CPUs, {free.get('GPU', 0):g} GPUs"
            )

        stall = Stall("embed", "chunks", len(rows), waiting_on)
        t0 = time.perf_counter()
        done = set()
        with self.failures("embed"):
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                EmbedActor,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=size),
                num_cpus=self.cfg.actor_cpus,
                num_gpus=gpus,
                max_restarts=1,
                max_task_retries=1,
                fn_constructor_kwargs={"spec": encoder_spec, "prompt": prompt},
            )
            batches = ds.iter_batches(batch_size=None, batch_format="numpy")
            for batch in iterate_with_deadline(batches, stall, "embed"):
                for chunk, wid in zip(batch["chunk"].tolist(), batch["worker"].tolist()):
                    done.add(chunk)
                    self.stats.record("embed", str(wid))
                stall.progress(len(batch["chunk"]))
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
                f"({first_line(e)})"
            ) from None
        from synth.engine.vllm_rows import output_fields

        def postprocess(row: dict) -> dict:
            return {**output_fields(row), "worker": _worker_id()}

        batch = max(1, int(config.get("batch_size") or 64))
        stall = Stall("llm", "rows", len(rows), lambda: "the vLLM engines of ray.data.llm")
        t0 = time.perf_counter()
        with self.failures("llm"):
            processor = build_processor(vLLMEngineProcessorConfig(**config), postprocess=postprocess)
            ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // batch)))
            for row in iterate_with_deadline(processor(ds).iter_rows(), stall, "llm"):
                stall.progress()
                self.stats.record("llm", str(row.get("worker") or "ray.data.llm"))
                yield row
        self.stats.add_seconds("llm", time.perf_counter() - t0)

    def searcher_remote(self, searcher) -> "RaySearch":
        if self.cfg.corpus_shards > 1 and searcher.factory != "Flat":
            raise UserError(
                f"engine.corpus_shards: {self.cfg.corpus_shards} corpus shards need exact search "
                f"(index.factory Flat); the index is {searcher.factory}"
            )
        rows = int(searcher.corpus_emb.shape[0])
        if self.cfg.corpus_shards > max(1, rows):
            log.warning(
                "engine.corpus_shards: %d shards for a corpus of %d rows; searching with %d (one row each at most)",
                self.cfg.corpus_shards, rows, max(1, rows),
            )  # fmt: skip
        from synth.engine.ray_search import RaySearch

        return RaySearch(self, searcher, shards=min(self.cfg.corpus_shards, max(1, rows)))

    def llm_backend(self, cfg, cache_dir):
        """``openai`` requests go out from the actors (per-shard results on ``storage``, else ``cache_dir``);
        ``vllm`` runs as ``ray.data.llm`` batch inference. ``local`` (one llama.cpp server: copies in actors
        would fight over the driver's cores) and ``openai-batch`` (one upload the provider spreads) stay."""
        if cfg.kind == "openai":
            from synth.engine.llm import RemoteBackend

            return RemoteBackend(cfg, self, self.cfg.storage or cache_dir)
        if cfg.kind == "vllm":
            from synth.engine.vllm_rows import RayVLLMBackend

            return RayVLLMBackend(cfg, self)
        return None

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
        for actor in pool:
            self._started.pop(id(actor), None)
        if self._ray is None:
            return
        for actor in pool:
            try:
                self._ray.kill(actor)
            except Exception:  # already dead, or the cluster is gone: nothing left to free
                pass

    def close(self) -> None:
        for search in self._searches.values():
            search.release()
        self._searches.clear()
        self._started.clear()
        if self._ray is not None and self._connected and self._ray.is_initialized():
            # a cluster this engine started stops with it; one it joined only loses this driver; either
            # within a bound, so an interrupted run leaves promptly
            shutdown_with_deadline(self._ray)
        self._ray = None
