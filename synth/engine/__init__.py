"""Where the stages run: the local process (the reference) or a Ray cluster (``synth.engine.ray_engine``,
the only module that imports Ray). ``open_engine`` builds the one engine a run uses."""

from __future__ import annotations

from synth.engine.base import Engine, EngineStats, LocalEngine
from synth.engine.config import EngineConfig, LocalEngineConfig, RayEngineConfig

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
    if cfg is None or cfg.kind == "local":
        return LocalEngine(cfg)
    from synth.engine.ray_engine import RayEngine

    return RayEngine(cfg, cache_dir=cache_dir)
