"""LLM backends behind one protocol (``base.Backend``); one file per backend kind.

Adding a backend is one file and one line in ``_MODULES``. Backends are imported lazily so the
base install never imports vllm.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from synth.llm.base import Backend
from synth.llm.config import BackendConfig

# kind -> (module, class); each class is built as ``cls(cfg)``.
_MODULES = {
    "openai": ("synth.llm.openai", "OpenAIBackend"),
    "openai-batch": ("synth.llm.batch", "OpenAIBatchBackend"),
    "local": ("synth.llm.local", "LocalBackend"),
    "vllm": ("synth.llm.vllm", "VLLMBackend"),
}


def make_backend(cfg: BackendConfig) -> Backend:
    module, cls = _MODULES[cfg.kind]
    return getattr(importlib.import_module(module), cls)(cfg)


def resolve_model_path(cfg: BackendConfig, base: Path) -> None:
    """Make local model paths absolute relative to the recipe file."""
    model = getattr(cfg, "model", None)
    if cfg.kind in ("local", "vllm") and model and not model.startswith("bundled:"):
        p = Path(model).expanduser()
        if not p.is_absolute() and (base / p).exists():
            cfg.model = str((base / p).resolve())
