"""LLM access for generation and judging: backends behind one protocol (``base.Backend``), one file per
backend kind, and the client around them (request cache, accounting, budget, prompts, answer checks).

A new backend is one module (its config class in ``config.py``) and one line in ``config.REGISTRY``.
Backends are imported lazily so the base install never imports vllm.
"""

from __future__ import annotations

from pathlib import Path

from synth.core.registry import build
from synth.llm.base import Backend
from synth.llm.config import REGISTRY, BackendConfig


def make_backend(cfg: BackendConfig) -> Backend:
    return build(REGISTRY, cfg)


def resolve_model_path(cfg: BackendConfig, base: Path) -> None:
    """Make local model paths absolute relative to the recipe file."""
    model = getattr(cfg, "model", None)
    if cfg.kind in ("local", "vllm") and model and not model.startswith("bundled:"):
        p = Path(model).expanduser()
        if not p.is_absolute() and (base / p).exists():
            cfg.model = str((base / p).resolve())
