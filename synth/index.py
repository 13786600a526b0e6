"""Nearest-neighbour search: FAISS ``index_factory`` strings, an ``auto`` choice, block search.

Exact search (``Flat``) runs ``faiss.knn`` straight over the (memory-mapped) corpus matrix, one
block of queries at a time: no copy of the corpus is made, so peak memory stays near the embedding
bytes. Other factory strings build a FAISS index (trained on a seeded sample, filled in chunks).
With ``device: cuda`` (or ``auto`` on a machine whose torch sees a GPU) exact search runs as a torch
matmul + topk on the GPU, and other indexes go to faiss-gpu; a missing GPU path is an error, never
a silent CPU fallback. The device that ran is returned and logged.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from synth.core.errors import UserError

log = logging.getLogger("synth.index")

FLAT_MAX_VECTORS = 1_000_000  # the survey's appendix D: exact search is practical below ~1M vectors


def choose_factory(n: int, d: int, memory_budget_bytes: float) -> str:
    """``auto``: Flat below ~1M vectors; HNSW above while the graph fits the memory budget;
    IVF-PQ when memory-bound (vectors compressed to ``d/4`` bytes)."""
    if n < FLAT_MAX_VECTORS:
        return "Flat"
    hnsw_bytes = n * (d * 4 + 32 * 2 * 4)  # vectors + ~2M int32 links per node (M=32)
    if hnsw_bytes <= memory_budget_bytes:
        return "HNSW32"
    nlist = 1 << int(round(math.log2(4 * math.sqrt(n))))
    m = next(m for m in (d // 4, d // 8, d // 16, 8) if m > 0 and d % m == 0)
    return f"IVF{nlist},PQ{m}"


_PROBE_DIM = 64  # a stand-in dimension to parse a factory string before the embeddings exist
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means warns below this many training vectors per list


def _faiss_reason(err: RuntimeError) -> str:
    """The human part of a faiss C++ error ("Error in <signature> at <file>:<line>: <reason>")."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.split(r"\.(?:cpp|h):\d+: ", text)[-1]
    return re.sub(r"^Error: '.*?' failed: ", "", text)


def _check_training(faiss, index, factory: str, n: int, train_size: int) -> list[str]:
    """An IVF index needs at least one training vector per list (faiss asserts otherwise); say so in one
    line naming the setting, with a factory that fits. Returns notes for the report (faiss's warning)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return []
    nlist, n_train = ivf.nlist, min(n, train_size)
    if nlist < 1:
        raise UserError(f"index.factory: {factory} has no inverted lists; use IVF<lists>,... with lists >= 1, or Flat")
    fits = 1 << max(0, (n // MIN_POINTS_PER_CENTROID).bit_length() - 1)  # largest power of 2 with 39 vectors each
    if n < nlist:
        hint = f"use IVF{fits},Flat or Flat" if n >= MIN_POINTS_PER_CENTROID else "use Flat"
        raise UserError(
            f"index.factory: {factory} needs at least {nlist} (faiss warns below "
            f"{MIN_POINTS_PER_CENTROID}x{nlist}) training vectors; the corpus has {n}: {hint}"
        )
    if n_train < nlist:
        raise UserError(
            f"index.train_size: {train_size} training vectors are fewer than the {nlist} lists of "
            f"{factory}; use at least {min(n, MIN_POINTS_PER_CENTROID * nlist)}"
        )
    if n_train < MIN_POINTS_PER_CENTROID * nlist:
        return [
            f"{factory}: {n_train} training vectors for {nlist} lists (faiss advises at least "
            f"{MIN_POINTS_PER_CENTROID * nlist})"
        ]
    return []


def check_factory(factory: str, n: int, train_size: int) -> None:
    """When the corpus is loaded, before hours of embedding: a factory string faiss cannot parse, or an IVF
    with more lists than training vectors, is a one-line error now. What depends on the vector
    dimension (PQ sub-quantizers dividing it) is checked when the index is built."""
    if factory == "auto":
        return
    # HNSW with M < 2 parses, then aborts the process inside faiss (an assertion, not an exception) or
    # never returns, when the first vectors are added: no trial build could report it, so it is refused here.
    for m in re.findall(r"HNSW(\d+)", factory):
        if int(m) < 2:
            raise UserError(f"index.factory: {factory}: HNSW{m} needs M >= 2 neighbours per node; use e.g. HNSW32")
    import faiss

    try:
        index = faiss.index_factory(_PROBE_DIM, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        if "could not parse" in str(e):
            raise UserError(f"index.factory: faiss cannot build {factory!r}: {_faiss_reason(e)}") from None
        return
    _check_training(faiss, index, factory, n, train_size)


@dataclass
class SearchInfo:
    factory: str
    metric: str
    device: str
    k: int
    vectors: int
    dim: int
    build_seconds: float = 0.0
    search_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def resolve_device(requested: str) -> str:
    if requested == "cpu":
        return "cpu"
    import torch

    has_gpu = torch.cuda.is_available()
    if requested == "cuda" and not has_gpu:
        raise UserError("index.device: cuda requested but torch sees no GPU")
    return "cuda" if has_gpu else "cpu"


class Searcher:
    """Built once per run; ``search`` yields (start, scores [b, k], rows [b, k]) per query block."""

    def __init__(
        self,
        corpus_emb: np.ndarray,
        factory: str,
        metric: str,
        device: str,
        nprobe: int,
        ef_search: int,
        train_size: int,
        seed: int,
        memory_budget_bytes: float,
    ):
        import faiss

        n, d = corpus_emb.shape
        self.corpus_emb = corpus_emb
        self.factory = choose_factory(n, d, memory_budget_bytes) if factory == "auto" else factory
        self.device = resolve_device(device)
        self.info = SearchInfo(self.factory, metric, self.device, 0, n, d)
        t0 = time.perf_counter()
        self._index = None
        self._torch_corpus = None
        if self.factory == "Flat":
            if self.device == "cuda":
                import torch

                self._torch_corpus = torch.from_numpy(np.asarray(corpus_emb)).to("cuda", torch.float32)
                self.info.notes.append("exact search as fp32 torch matmul + topk on CUDA")
        else:
            try:
                index = faiss.index_factory(d, self.factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as e:
                raise UserError(
                    f"index.factory: faiss cannot build {self.factory!r} for {d}-dim vectors: {_faiss_reason(e)}"
                ) from None
            self.info.notes += _check_training(faiss, index, self.factory, n, train_size)
            if not index.is_trained:
                n_train = min(n, train_size)
                rng = np.random.default_rng(seed)
                take = np.sort(rng.choice(n, size=n_train, replace=False))
                try:  # e.g. PQ's 256 centroids per sub-quantizer on a tiny corpus: faiss asserts
                    index.train(np.ascontiguousarray(corpus_emb[take], dtype=np.float32))
                except RuntimeError as e:
                    raise UserError(
                        f"index.factory: {self.factory} cannot be trained on {n_train} vectors: "
                        f"{_faiss_reason(e)}; use Flat"
                    ) from None
            for start in range(0, n, 65536):
                index.add(np.ascontiguousarray(corpus_emb[start : start + 65536], dtype=np.float32))
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.nprobe = nprobe
            if hasattr(index, "hnsw"):
                index.hnsw.efSearch = ef_search
            if self.device == "cuda":
                if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
                    raise UserError(
                        "index.device: a GPU is present but this faiss build has no GPU support; "
                        "install synth[gpu] or set index.device: cpu"
                    )
                index = faiss.index_cpu_to_all_gpus(index)
            self._index = index
        self.info.build_seconds = time.perf_counter() - t0
        log.info("index %s (%s) on %s: %d x %d", self.factory, metric, self.device, n, d)

    @classmethod
    def from_config(cls, index_cfg, corpus_emb: np.ndarray, seed: int) -> "Searcher":
        """Build from a recipe's ``index`` section; the memory budget defaults to half the free RAM."""
        budget = index_cfg.memory_budget_gb * 2**30 if index_cfg.memory_budget_gb else None
        if budget is None:
            import psutil

            budget = psutil.virtual_memory().available / 2
        return cls(
            corpus_emb,
            index_cfg.factory,
            index_cfg.metric,
            index_cfg.device,
            index_cfg.nprobe,
            index_cfg.ef_search,
            index_cfg.train_size,
            seed,
            budget,
        )

    def search(self, query_emb: np.ndarray, k: int, block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Top-k by inner product, in blocks of ``block`` queries; rows are -1 past the corpus."""
        import faiss

        n = self.corpus_emb.shape[0]
        k_eff = min(k, n)
        self.info.k = max(self.info.k, k)
        for start in range(0, len(query_emb), block):
            t0 = time.perf_counter()
            q = np.ascontiguousarray(query_emb[start : start + block], dtype=np.float32)
            if k_eff == 0:
                scores, rows = np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
            elif self._torch_corpus is not None:
                scores, rows = self._torch_topk(q, k_eff)
            elif self._index is None:
                scores, rows = faiss.knn(q, self.corpus_emb, k_eff, metric=faiss.METRIC_INNER_PRODUCT)
            else:
                scores, rows = self._index.search(q, k_eff)
            if k_eff < k:
                pad = k - k_eff
                scores = np.concatenate([scores, np.full((len(q), pad), -np.inf, np.float32)], axis=1)
                rows = np.concatenate([rows, np.full((len(q), pad), -1, np.int64)], axis=1)
            scores = scores.astype(np.float32, copy=False)
            scores[rows < 0] = -np.inf
            self.info.search_seconds += time.perf_counter() - t0
            yield start, scores, rows.astype(np.int64, copy=False)

    def _torch_topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        qt = torch.from_numpy(q).to("cuda", torch.float32)
        scores, rows = torch.topk(qt @ self._torch_corpus.T, k, dim=1)
        return scores.cpu().numpy(), rows.cpu().numpy()
