"""What stages call: cache lookup, budget check, dispatch, persistence and accounting around a backend.

``LLMClient.complete(stage, requests)`` returns one response per request, in order. Cached responses
are served without touching the backend (a finished recipe reruns with zero calls and never starts
the server). Misses are sent in waves that fit the remaining budget; every final response is
committed to the SQLite cache the moment it arrives, so a killed run keeps all completed work.
Transport failures that survive the backend's retries end the stage with ``ResumableFailure``.
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from synth.core.errors import ResumableFailure, UserError
from synth.llm.accounting import Accounting, request_tokens_upper, prompt_tokens_estimate
from synth.llm.base import Backend, BackendUnavailable, ChatRequest, ChatResponse, request_key
from synth.llm.cache import RequestCache

log = logging.getLogger("synth.llm")


class LLMClient:
    def __init__(
        self, backend: Backend, cache: RequestCache, accounting: Accounting, max_reasks: int = 2, wave: int = 4096
    ):
        self.backend = backend
        self.cache = cache
        self.accounting = accounting
        self.max_reasks = max_reasks
        self.wave = wave
        self.identity = backend.identity()
        self.model = self.identity["model"]
        self._started = False
        self._lock = threading.Lock()

    def keys(self, requests: Sequence[ChatRequest]) -> list[str]:
        return [request_key(self.identity, r) for r in requests]

    def _start(self) -> None:
        if self._started:
            return
        try:
            self.backend.start()
        except BackendUnavailable as e:
            raise UserError(f"llm ({self.identity['kind']}): {e}") from None
        self._started = True
        probe = getattr(self.backend, "probe_usage", None)
        if probe:
            self.accounting.record("probe", self.model, ChatResponse(None, tokens_in=probe[0], tokens_out=probe[1]))

    def complete(self, stage: str, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        keys = self.keys(requests)
        results: list[ChatResponse | None] = [None] * len(requests)
        hits = self.cache.get_many(list(dict.fromkeys(keys)))
        misses: list[int] = []
        first_of: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in hits:
                results[i] = hits[key]
                self.accounting.record(stage, self.model, hits[key])
            elif key in first_of:
                continue  # identical request in the same batch: answered once, shared below
            else:
                first_of[key] = i
                misses.append(i)
        if misses:
            log.info("llm %s: %d cached, %d to send to %s", stage, len(hits), len(misses), self.model)
            self._send(stage, requests, keys, misses, results)
        for i, key in enumerate(keys):
            if results[i] is None and key in first_of and results[first_of[key]] is not None:
                results[i] = results[first_of[key]]
        return results  # type: ignore[return-value]

    def _send(
        self,
        stage: str,
        requests: Sequence[ChatRequest],
        keys: list[str],
        misses: list[int],
        results: list[ChatResponse | None],
    ) -> None:
        transport: list[ChatResponse] = []
        pending = list(misses)
        while pending:
            bounds = [request_tokens_upper(requests[i], self.max_reasks) for i in pending[: self.wave]]
            n = self.accounting.affordable(self.model, bounds)
            if n == 0:
                tokens, usd = self.accounting.spent()
                raise ResumableFailure(
                    f"budget: stopped before exceeding {self._budget_text()} (spent {tokens} tokens, "
                    f"${usd:.4f}); {len(pending)} {stage} requests not sent; completed responses are cached, "
                    "raise the budget and rerun to continue"
                )
            if not self._started:
                self._start()
            batch = pending[:n]
            pending = pending[n:]

            def on_response(j: int, response: ChatResponse, batch=batch) -> None:
                i = batch[j]
                with self._lock:
                    self.cache.put(keys[i], response)
                    self.accounting.record(stage, self.model, response)
                    if response.final:
                        results[i] = response
                    else:
                        transport.append(response)

            self.backend.generate([requests[i] for i in batch], on_response)
            if transport:
                done = sum(1 for i in misses if results[i] is not None)
                last = transport[-1]
                raise ResumableFailure(
                    f"llm {self.identity['kind']} {self.identity['base_url']}: {len(transport)} {stage} requests "
                    f"failed after retries ({last.error}: {last.detail}); {done} completed responses are cached, "
                    "rerun the same command to resume"
                )
            missing = [i for i in batch if results[i] is None]
            if missing:  # a backend must answer every dispatched request
                raise ResumableFailure(
                    f"llm {self.identity['kind']}: {len(missing)} {stage} requests got no answer; rerun to resume"
                )

    def _budget_text(self) -> str:
        b = self.accounting.budget
        parts = []
        if b and b.usd is not None:
            parts.append(f"${b.usd:g}")
        if b and b.tokens is not None:
            parts.append(f"{b.tokens} tokens")
        return " / ".join(parts) or "the budget"

    def plan(self, stage: str, requests: Sequence[ChatRequest]) -> dict:
        """For ``--dry-run``: what ``complete`` would send, with token bounds and cost. Sends nothing."""
        keys = self.keys(requests)
        hits = self.cache.get_many(list(dict.fromkeys(keys)))
        unique = {k: r for k, r in zip(keys, requests)}
        todo = [r for k, r in unique.items() if k not in hits]
        upper_in = upper_out = est_in = 0
        for r in todo:
            tin, tout = request_tokens_upper(r, self.max_reasks)
            upper_in, upper_out, est_in = upper_in + tin, upper_out + tout, est_in + prompt_tokens_estimate(r)
        cost = self.accounting.cost(self.model, upper_in, upper_out)
        return {
            "stage": stage,
            "model": self.model,
            "requests": len(requests),
            "cached": len(unique) - len(todo),
            "to_send": len(todo),
            "tokens_in_upper": upper_in,
            "tokens_out_upper": upper_out,
            "tokens_in_estimate": est_in,
            "cost_usd_upper": None if cost is None else round(cost, 6),
        }

    def close(self) -> None:
        if self._started:
            self.backend.close()
            self._started = False
