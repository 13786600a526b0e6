"""The parts of ``report.json`` that describe the run rather than its data: environment and licences."""

from __future__ import annotations

import os
import platform


def environment() -> dict:
    # Versions from package metadata: importing torch / sentence-transformers just to read their
    # version would cost seconds on a fully cached rerun.
    from importlib.metadata import PackageNotFoundError, version

    from synth.core.version import version as synth_version

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "synth": synth_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": ver("torch"),
        "faiss": ver("faiss-cpu") or ver("faiss-gpu-cu12") or ver("faiss"),
        "sentence_transformers": ver("sentence-transformers"),
        "openai": ver("openai"),
        "xllamacpp": ver("xllamacpp"),
        "vllm": ver("vllm"),
    }


def licenses(recipe, personas) -> dict:
    """role -> licence of everything the output is made from."""
    from synth.embed import BUNDLED_MODEL

    out = {"corpus": getattr(recipe.source, "license", "unknown")}
    if personas:
        out["personas"] = personas[0].license or "unknown"
    if recipe.llm is not None:
        # the embedded default is SmolLM2-135M-Instruct (Apache-2.0); other backends: see their model cards
        from synth.llm.config import BUNDLED_LLM

        out["llm"] = (
            "apache-2.0"
            if recipe.llm.kind == "local" and recipe.llm.model == BUNDLED_LLM
            else "unknown (see the model card)"
        )
    out["embedder"] = "apache-2.0" if recipe.embed.model == BUNDLED_MODEL else "unknown (see the model card)"
    return out
