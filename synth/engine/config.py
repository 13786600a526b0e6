"""The recipe's ``engine`` section: where the stages run.

``kind: local`` (the default) is today's single-process code and the reference every other engine must
equal row for row. ``kind: ray`` runs embedding, search and LLM requests in Ray actors; every other field
has a default, so ``--set engine.kind=ray`` is a complete setting. No field here keys a cache: where work
runs never changes what it computes (the driver cuts the shards, see ``synth.engine.shards``).

A new engine is one module (its class, following ``synth.engine.base.Engine``), its config class here and one
line in ``REGISTRY``: the recipe's union and ``open_engine`` both come from it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from synth.core.registry import config_union
from synth.core.strict import StrictModel


class LocalEngineConfig(StrictModel):
    kind: Literal["local"] = "local"


class RayEngineConfig(StrictModel):
    kind: Literal["ray"] = "ray"
    address: str = Field(
        "local",
        description="'local': synth starts a loopback Ray cluster and stops it at the end; 'auto': join the "
        "running cluster (ray start / ray up / KubeRay); 'ray://host:port': Ray Client",
    )
    num_cpus: float | None = Field(
        None,
        gt=0,
        description="CPUs the local cluster declares (address 'local' only); default 4x the machine's, so "
        "fractional actors never wait on each other on a small machine",
    )
    actors: int = Field(2, ge=1, le=4096, description="actor pool size per stage")
    actor_cpus: float = Field(0.5, gt=0, description="CPUs each actor reserves")
    actor_gpus: float | None = Field(
        None, ge=0, description="GPUs each embedding/LLM actor reserves; default 1 when the cluster has GPUs, else 0"
    )
    corpus_shards: int = Field(
        1,
        ge=1,
        le=4096,
        description="exact search with the corpus split across this many actors and their top-k merged "
        "(index.factory Flat only)",
    )
    llm_shard_rows: int = Field(64, ge=1, description="LLM requests per shard (the unit of work and of resume)")
    storage: str | None = Field(
        None,
        description="a folder every node sees (shared storage) for per-shard results; default the run's "
        "embed.cache_dir, which must then be shared",
    )

    @field_validator("num_cpus")
    @classmethod
    def _whole_cpus(cls, value: float | None) -> float | None:
        if value is not None and value != int(value):
            raise ValueError(
                f"{value:g} is not a whole number: a Ray node declares whole CPUs (actor_cpus may be fractional)"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value in ("local", "auto") or re.fullmatch(r"(ray://)?[^\s:/]+:\d{1,5}", value):
            return value
        raise ValueError(f"{value!r} is not 'local', 'auto', host:port or ray://host:port")


# kind -> (config, "module:Class" of the engine, built as ``Class(cfg, cache_dir=...)``); by name, so a recipe
# that never asks for Ray never imports it. The order is the order of the tags in a bad ``kind``'s message.
REGISTRY: dict[str, tuple[type, str]] = {
    "local": (LocalEngineConfig, "synth.engine.base:LocalEngine"),
    "ray": (RayEngineConfig, "synth.engine.ray_engine:RayEngine"),
}
EngineConfig = config_union(REGISTRY)
