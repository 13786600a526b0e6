"""Checks on a model folder before anything loads it (the embedder, cross-encoder judges).

Loading a folder that is not a model fails deep inside transformers with a traceback, and a bare
name would mean a download, which synth never does. So a model is resolved here first: an existing
folder with a sentence-transformers or transformers config, or a name already in the local Hugging
Face cache; anything else is a one-line ``UserError`` naming the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from synth.core.errors import UserError

MODEL_FILES = ("modules.json", "config.json")
_NO_LIMIT = 10**6  # tokenizers without a limit report model_max_length as 1e30


def _cached_snapshot(name: str) -> Path | None:
    """The local Hugging Face cache copy of ``name`` (never a download), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached / not a valid repo id: both mean "not available offline"
        return None


def model_folder(model: str, key: str) -> Path:
    """The folder of ``model`` (a path or a name in the local HF cache), checked to hold a model config.
    ``key`` (e.g. ``embed.model``) names the setting in the error."""
    path = Path(os.path.expanduser(model))
    if not path.exists():
        parts = model.split("/")
        as_name = not model.startswith((".", "/", "~")) and len(parts) <= 2 and all(parts)  # "owner/name"
        cached = _cached_snapshot(model) if as_name else None
        if cached is None:
            if not as_name:
                raise UserError(f"{key}: no such model folder: {model}")
            raise UserError(
                f"{key}: {model!r} is not a model folder and synth never downloads; fetch it once "
                f"(huggingface-cli download {model} --local-dir DIR) and set {key}: DIR"
            )
        path = cached
    if not path.is_dir():
        raise UserError(f"{key}: {model} is a file, expected a model folder (with modules.json or config.json)")
    if not any((path / f).is_file() for f in MODEL_FILES):
        raise UserError(
            f"{key}: {model} is not a model folder: it has neither modules.json "
            "(sentence-transformers) nor config.json (transformers)"
        )
    return path


def _read_json(path: Path, empty):
    """The JSON in ``path`` when it has the type of ``empty``, else ``empty``: a limit is only read if present."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return empty
    return data if isinstance(data, type(empty)) else empty


def max_positions(folder: str | Path) -> tuple[int, str] | None:
    """The longest input, in tokens, the model in ``folder`` takes, and the file that says so: the smaller
    of the transformer's ``max_position_embeddings`` and its tokenizer's ``model_max_length``. None when
    neither file says."""
    folder = Path(folder)
    sub = folder  # a plain transformers folder; a sentence-transformers one names its Transformer module's
    for module in _read_json(folder / "modules.json", []):
        if isinstance(module, dict) and str(module.get("type", "")).endswith("Transformer"):
            sub = folder / str(module.get("path", ""))
            break
    limits = []
    pos = _read_json(sub / "config.json", {}).get("max_position_embeddings")
    if isinstance(pos, int) and pos > 0:
        limits.append((pos, str(sub / "config.json")))
    tok = _read_json(sub / "tokenizer_config.json", {}).get("model_max_length")
    if isinstance(tok, int) and 0 < tok < _NO_LIMIT:
        limits.append((tok, str(sub / "tokenizer_config.json")))
    return min(limits) if limits else None


def check_max_length(folder: str | Path, length: int, key: str) -> None:
    """A one-line error when ``length`` (``key``) is above what the model in ``folder`` takes; an error,
    not a clamp, because the value is part of the cache key and of the published recipe."""
    limit = max_positions(folder)
    if limit is not None and length > limit[0]:
        raise UserError(
            f"{key}: {length} is above the model's limit of {limit[0]} tokens ({limit[1]}); use at most {limit[0]}"
        )
