"""vLLM on Ray: ``ChatRequest`` -> Ray Data LLM rows, processor output rows -> ``ChatResponse`` (no Ray import).

A recipe with ``llm: {kind: vllm}`` on the Ray engine runs its requests through ``ray.data.llm``'s vLLM
processor (``build_processor`` with a ``vLLMEngineProcessorConfig``), one vLLM engine per actor and GPU.
The Ray calls live in ``RayEngine.vllm_generate(config, rows)``; everything else is here, in plain
functions that CPU tests check without vLLM or Ray:

- ``request_row``: one input row per request in Ray 2.60's shape: ``messages`` (chat format, templated by
  the processor), and ``sampling_params`` as a dict that the vLLM stage turns into ``vllm.SamplingParams``:
  temperature, top_p, max_tokens, stop, a per-row ``seed`` (the request's own seed, else one derived from
  its key, which is a content hash: never Python's ``hash()``), and ``structured_outputs: {"json": schema}``
  (the stage builds ``StructuredOutputsParams(**structured_outputs)``). Every row carries every field
  (``None`` when unused), so Arrow gives all rows of a block one type.
- ``output_fields`` (the processor's postprocess) keeps the few columns the driver reads; ``parse_output``
  turns one into a ``ChatResponse`` with the same validation as every backend (``check_answer``). Ray's
  output has no finish reason: an answer that used all of ``max_tokens`` counts as truncated (``length``).
- ``RayVLLMBackend`` is the ``Backend`` ``RayEngine.llm_backend`` hands the pool for ``kind: vllm``. Its
  identity is ``VLLMBackend``'s, so cache keys are the same as on one machine. Answers that fail validation
  are re-asked in follow-up rounds holding only those conversations (up to ``max_reasks``), as the
  in-process backend does; each round is one processor run, so a model load, and rare with structured
  outputs enforced.

This path is untested on GPU hardware in this project (vllm is not installed on the CI machines).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from synth.core.seeding import stable_key
from synth.llm.base import ChatRequest, ChatResponse, OnResponse, request_key
from synth.llm.config import VLLMConfig
from synth.llm.validate import check_answer, reask_request, retryable_by_reask

log = logging.getLogger("synth.llm")

ERROR_COLUMN = "__inference_error__"  # set by Ray's vLLM stage on a failed row (should_continue_on_error)
OUTPUT_COLUMNS = ("key", "generated_text", "num_input_tokens", "num_generated_tokens")


def row_seed(request: ChatRequest, key: str) -> int:
    """The request's own sampling seed, else one drawn from its key (31 bits, like ``request_seed``)."""
    seed = request.param_dict.get("seed")
    return int(seed) if seed is not None else stable_key("vllm-row", key) & 0x7FFFFFFF


def sampling_params(request: ChatRequest, key: str, cfg: VLLMConfig) -> dict[str, Any]:
    """The row's ``sampling_params``: the request's params over the recipe defaults, every field present."""
    p = request.param_dict
    stop = p.get("stop")
    return {
        "temperature": float(p.get("temperature", cfg.temperature)),
        "top_p": float(p.get("top_p", cfg.top_p)),
        "max_tokens": int(p.get("max_tokens", cfg.max_tokens)),
        "seed": row_seed(request, key),
        "stop": ([stop] if isinstance(stop, str) else list(stop)) if stop else None,
        # JSON text, not the schema dict: schemas differ per request and Arrow would need one struct type
        "structured_outputs": {"json": request.schema} if request.schema is not None else None,
    }


def request_row(request: ChatRequest, key: str, cfg: VLLMConfig) -> dict[str, Any]:
    """One processor input row; ``key`` is carried through every stage to the output."""
    return {"key": key, "messages": request.message_dicts(), "sampling_params": sampling_params(request, key, cfg)}


def output_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The processor's postprocess: only what ``parse_output`` reads (rows Ray failed skip it, and keep
    their ``__inference_error__`` column)."""
    return {name: row.get(name) for name in OUTPUT_COLUMNS}


def processor_config(cfg: VLLMConfig, *, actors: int, batch_rows: int, gpus_per_actor: float | None = None) -> dict:
    """Keyword arguments of ``ray.data.llm.vLLMEngineProcessorConfig`` (JSON-able, so the driver can log it)."""
    from synth.llm.vllm import engine_kwargs as vllm_engine_kwargs

    engine_kwargs = vllm_engine_kwargs(cfg)
    out: dict[str, Any] = {
        "model_source": cfg.model,
        "engine_kwargs": engine_kwargs,
        "concurrency": actors,
        "batch_size": batch_rows,
        "should_continue_on_error": True,  # one bad row (a prompt over the context) fails alone
    }
    if gpus_per_actor is not None and cfg.tensor_parallel_size == 1:
        out["placement_group_config"] = {"bundle_per_worker": {"GPU": gpus_per_actor}}
    return out


def parse_output(row: dict[str, Any], request: ChatRequest, model: str) -> ChatResponse:
    """One output row as a ``ChatResponse`` (attempts counted by the caller)."""
    tokens_in = int(row.get("num_input_tokens") or 0)
    tokens_out = int(row.get("num_generated_tokens") or 0)
    error_text = row.get(ERROR_COLUMN) or ""
    if error_text:
        # Ray's vLLM stage reports a rejected input (too long, bad params) as a ValueError-like message;
        # anything else is the engine failing, which a rerun retries (not cached).
        input_error = any(name in error_text for name in ("ValueError", "TypeError", "Validation"))
        return ChatResponse(
            None,
            finish_reason="error",
            tokens_in=tokens_in,
            error="bad_request" if input_error else "server_error",
            detail=" ".join(str(error_text).split())[:240],
            model=model,
        )
    text = row.get("generated_text")
    finish = "length" if tokens_out >= request.max_tokens else "stop"
    parsed, error, detail = check_answer(request, text, finish)
    if error is None:
        return ChatResponse(text, parsed, finish, tokens_in=tokens_in, tokens_out=tokens_out, model=model)
    reason = error if error in ("length", "content_filter", "refusal") else finish
    return ChatResponse(
        None, None, reason, tokens_in=tokens_in, tokens_out=tokens_out, error=error, detail=detail, model=model
    )


class RayVLLMBackend:
    """``kind: vllm`` on a distributed engine: batch inference through ``RayEngine.vllm_generate``."""

    kind = "vllm"

    def __init__(self, cfg: VLLMConfig, engine, *, actors: int | None = None, batch_rows: int | None = None):
        ecfg = getattr(engine, "cfg", None)
        self.cfg = cfg
        self.engine = engine
        self.actors = int(actors or getattr(ecfg, "actors", None) or 1)
        self.batch_rows = int(batch_rows or getattr(ecfg, "llm_shard_rows", None) or 64)
        self.gpus = getattr(ecfg, "actor_gpus", None)

    def identity(self) -> dict:
        return {"kind": self.kind, "base_url": "in-process", "model": self.cfg.model}

    def start(self) -> None:
        """Nothing to start on the driver: the processor loads the model in its actors."""

    def close(self) -> None:
        """The processor's actors end with each run of it."""

    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        if not requests:
            return
        config = processor_config(self.cfg, actors=self.actors, batch_rows=self.batch_rows, gpus_per_actor=self.gpus)
        log.info("vllm (ray): %d requests, %d actors, batches of %d", len(requests), self.actors, self.batch_rows)
        answer_rounds(
            requests, self.identity(), self.cfg, lambda rows: self.engine.vllm_generate(config, rows), on_response
        )


def answer_rounds(
    requests: Sequence[ChatRequest],
    identity: dict,
    cfg: VLLMConfig,
    process: Callable[[list[dict]], Iterable[dict]],
    on_response: OnResponse,
) -> None:
    """Send every request through ``process`` (rows in, output rows out, any order), re-asking the answers
    that failed JSON / schema validation in later rounds; ``on_response(i, r)`` once per index when final."""
    conv = {i: r for i, r in enumerate(requests)}  # the conversation as it stands (re-asks append to it)
    spent = {i: [0, 0, 0, 0.0] for i in conv}  # tokens in, tokens out, attempts, seconds
    pending = list(conv)
    for round_ in range(cfg.max_reasks + 1):
        keyed = {request_key(identity, conv[i]): i for i in pending}
        rows = [request_row(conv[i], k, cfg) for k, i in sorted(keyed.items())]
        t0 = time.perf_counter()
        again, seen = [], set()
        for row in process(rows):
            i = keyed.get(row.get("key"))
            if i is None or i in seen:
                continue
            seen.add(i)
            r = parse_output(row, conv[i], cfg.model)
            s = spent[i]
            s[0], s[1], s[2], s[3] = s[0] + r.tokens_in, s[1] + r.tokens_out, s[2] + 1, time.perf_counter() - t0
            if r.error is not None and retryable_by_reask(r.error) and round_ < cfg.max_reasks:
                conv[i] = reask_request(conv[i], row.get("generated_text") or "", r.detail)
                again.append(i)
                continue
            r.tokens_in, r.tokens_out, r.attempts, r.latency_s = s[0], s[1], s[2], round(s[3], 4)
            on_response(i, r)
        lost = [i for i in pending if i not in seen]
        for i in lost:  # a row the processor never returned: the engine failed it; a rerun retries
            detail = "ray.data.llm returned no row for this request"
            on_response(i, ChatResponse(None, finish_reason="error", error="server_error", detail=detail))
        pending = again
        if not pending:
            return
        log.info("vllm (ray): re-asking %d answers that failed validation", len(pending))
