"""Where the stages run: the local process (the reference) or a Ray cluster (``synth.engine.ray_engine``,
the only module that imports Ray). ``open_engine`` builds the one engine a run uses, from the kinds in
``synth.engine.config.REGISTRY``."""

from __future__ import annotations

from synth.core.registry import build
from synth.engine.base import Engine, EngineStats, LocalEngine
from synth.engine.config import REGISTRY, EngineConfig, LocalEngineConfig, RayEngineConfig

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineStats",
    "LocalEngine",
    "LocalEngineConfig",
    "RayEngineConfig",
    "open_engine",
]


def open_engine(cfg=None, cache_dir: str | None = None) -> Engine:
    """The engine for a recipe's ``engine`` section (None: local). Close it with ``close()``."""
    return build(REGISTRY, cfg if cfg is not None else LocalEngineConfig(), cache_dir=cache_dir)
