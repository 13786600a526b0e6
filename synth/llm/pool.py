"""The one place LLM clients are set up: a ``ClientPool`` per command (a run, a probe, a relabel).

It opens one ``LLMClient`` per distinct backend config, on first use, all of them over one request
cache (``<cache_dir>/llm/requests.sqlite``) and one ``Accounting`` (prices and budget), so the
generation stages, the LLM judges and relabel are counted in one ``report["llm"]`` and one budget.
The Batch API backend keeps its batch ids under ``<cache_dir>/llm/batches`` to resume polling.
Nothing starts before a request is sent: a rerun served from the cache never starts a server.

With a distributed engine (``engine: {kind: ray}``) the backends change, the clients do not: the pool asks
the engine it is given (``Engine.llm_backend``) for a backend that sends from its workers, and builds the
in-process one when the engine has none for that kind (the local engine never has).

``pool()`` (or ``pool(None)``) is the command's default LLM (``None`` when it has none);
``pool(cfg)`` is a stage's own ``llm:``; that call shape is ``make_judge``'s ``llm_client``.
A dry run uses ``synth.llm.plan.PlanningPool``, which hands out planning clients instead.
"""

from __future__ import annotations

import threading
from pathlib import Path

from synth.llm.accounting import Accounting
from synth.llm.config import BackendConfig, Budget, Price


class ClientPool:
    def __init__(
        self,
        default: BackendConfig | None,
        cache_dir: str | Path | None = None,
        prices: dict[str, Price] | None = None,
        budget: Budget | None = None,
        engine=None,
    ):
        from synth.core.files import default_cache_dir

        self.default = default
        self.engine = engine  # synth.engine.Engine (None: every backend in this process); hands out its own backends
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.accounting = Accounting(prices, budget)
        self.clients: dict[str, object] = {}  # config as JSON -> client
        self._cache = None
        self._lock = threading.Lock()  # judges may ask for their client from worker threads

    @classmethod
    def for_recipe(cls, recipe, engine=None) -> "ClientPool":
        """The run's pool: the recipe's ``llm`` as default, its cache dir, prices and budget, and the run's engine."""
        return cls(recipe.llm, recipe.embed.cache_dir, recipe.prices, recipe.budget, engine=engine)

    def __call__(self, cfg: BackendConfig | None = None):
        """The client for ``cfg`` (None: the default LLM; None back when there is none)."""
        cfg = cfg if cfg is not None else self.default
        if cfg is None:
            return None
        key = cfg.model_dump_json()
        with self._lock:
            if key not in self.clients:
                self.clients[key] = self._open(cfg)
            return self.clients[key]

    def request_cache(self):
        """The one request cache every client of the pool shares."""
        if self._cache is None:
            from synth.llm.cache import RequestCache

            self._cache = RequestCache.in_dir(self.cache_dir)
        return self._cache

    def _backend(self, cfg: BackendConfig):
        from synth.llm import make_backend

        backend = self.engine.llm_backend(cfg, self.cache_dir) if self.engine is not None else None
        if backend is not None:
            return backend
        backend = make_backend(cfg)
        if hasattr(backend, "state_dir"):  # the Batch API backend keeps batch ids to resume polling
            backend.state_dir = self.cache_dir / "llm" / "batches"
        return backend

    def _open(self, cfg: BackendConfig):
        from synth.llm.client import LLMClient

        return LLMClient(self._backend(cfg), self.request_cache(), self.accounting, cfg.max_reasks)

    def close(self) -> None:
        """Stop every started backend and close the cache; safe to call twice."""
        with self._lock:
            clients, self.clients = list(self.clients.values()), {}
            cache, self._cache = self._cache, None
        try:
            for c in clients:
                c.close()
        finally:
            if cache is not None:
                cache.close()

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
