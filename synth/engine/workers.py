"""The workers an engine runs: plain classes, no Ray import, so they are tested (and run by the local
engine) as they are. Each is built once per process (``cls(**init_kwargs)``) and called once per item.

Threads: a worker runs torch and faiss with the DRIVER's thread counts (passed in its spec), whatever the
engine's scheduler set (Ray sets OMP_NUM_THREADS from an actor's fractional CPUs). BLAS and torch CPU
kernels split their sums by thread, so the last bits of an embedding or an exact score depend on the count
(measured: faiss.knn over 500 x 20k at k 1000 differs by up to 3.6e-7 between 1 and 2 threads); the same
count gives the local engine's bytes. Actor CPUs stay a scheduling hint."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from synth.core.files import save_array
from synth.index import exact_topk


class EmbedWorker:
    """Encodes embedding chunks and writes each to the cache (``save_array``: atomic, checked), where the
    driver's ``synth.embed._Chunks.assemble`` reads them. ``spec``: the ``synth.embed.Encoder`` arguments
    ``{model, max_seq_length, batch_size, normalize, device}``."""

    def __init__(self, spec: dict, prompt: str):
        from synth.embed import Encoder

        if spec.get("threads"):
            import torch

            torch.set_num_threads(int(spec["threads"]))
        self.encoder = Encoder(
            spec["model"], spec["max_seq_length"], spec["batch_size"], spec["normalize"], spec.get("device", "auto")
        )
        self.prompt = prompt

    def __call__(self, job: tuple[int, list[str], str]) -> dict:
        chunk, texts, path = job
        t0 = time.perf_counter()
        save_array(Path(path), self.encoder.encode(list(texts), self.prompt))
        return {"chunk": int(chunk), "rows": len(texts), "seconds": time.perf_counter() - t0}


def open_matrix(path: str | None, matrix: np.ndarray | None) -> np.ndarray:
    """The corpus matrix: the cached ``full-*.npy`` opened read-only as a memmap (every worker on a node
    shares the page cache), or an array handed over in memory."""
    if path is not None:
        return np.load(path, mmap_mode="r")
    if matrix is None:
        raise ValueError("SearchWorker needs matrix_path or matrix")
    return matrix


class SearchWorker:
    """Exact (``faiss.knn`` over the memmap, or a torch matmul on CUDA) or index top-k for one query block,
    over the whole corpus or the row range ``[lo, hi)`` of it (a corpus shard; rows returned are global).
    Results are padded with -1 / -inf to ``k`` and ordered by ``synth.index.order_ties``, as the local
    ``Searcher.search`` yields them."""

    def __init__(
        self,
        matrix_path: str | None = None,
        matrix: np.ndarray | None = None,
        index_bytes: bytes | np.ndarray | None = None,
        row_range: tuple[int, int] | None = None,
        device: str = "cpu",
        params: dict | None = None,
        threads: int | None = None,
    ):
        import faiss

        if threads:
            faiss.omp_set_num_threads(int(threads))
        corpus = open_matrix(matrix_path, matrix)
        self.lo, hi = row_range if row_range is not None else (0, corpus.shape[0])
        self.corpus = corpus[self.lo : hi]
        self.device = device
        self.index = None
        self.torch_corpus = None
        self.whole = None
        if index_bytes is None and row_range is None:
            # exact search over the whole corpus: the driver's own code path, so the lists are the local
            # engine's whatever it does at a tie cut (corpus shards need the canonical ``exact_topk``)
            from synth.index import Searcher

            self.whole = Searcher(self.corpus, "Flat", "ip", device, 1, 1, 1, 0, 0.0)
        elif index_bytes is not None:
            self.index = faiss.deserialize_index(np.frombuffer(index_bytes, np.uint8).copy())
            for name, value in (params or {}).items():  # nprobe / efSearch: not kept by serialisation
                faiss.ParameterSpace().set_index_parameter(self.index, name, value)
            if device == "cuda":
                self.index = faiss.index_cpu_to_all_gpus(self.index)
        elif device == "cuda":
            import torch

            self.torch_corpus = torch.from_numpy(np.asarray(self.corpus)).to("cuda", torch.float32)

    def __call__(self, item: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray, np.ndarray]:
        from synth.index import order_ties

        start, q, k = item
        q = np.ascontiguousarray(q, dtype=np.float32)
        if self.whole is not None and len(q):
            _, scores, rows = next(iter(self.whole.search(q, k, len(q))))
            return start, scores, rows
        n = self.corpus.shape[0]
        k_eff = min(k, n)
        if k_eff == 0:
            scores, rows = np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
        elif self.index is not None:
            scores, rows = self.index.search(q, k_eff)
        else:  # exact: the canonical list, which corpus shards merge into exactly
            scores, rows = exact_topk(self._exact, q, k_eff, n)
        rows = rows.astype(np.int64, copy=False)
        if self.lo:
            rows = np.where(rows >= 0, rows + self.lo, rows)
        if k_eff < k:
            pad = k - k_eff
            scores = np.concatenate([scores, np.full((len(q), pad), -np.inf, np.float32)], axis=1)
            rows = np.concatenate([rows, np.full((len(q), pad), -1, np.int64)], axis=1)
        scores, rows = order_ties(scores.astype(np.float32, copy=False), rows)
        return start, scores, rows

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self.torch_corpus is None:
            return faiss.knn(q, self.corpus, k, metric=faiss.METRIC_INNER_PRODUCT)
        import torch

        top = torch.topk(torch.from_numpy(q).to("cuda", torch.float32) @ self.torch_corpus.T, k, dim=1)
        return top.values.cpu().numpy(), top.indices.cpu().numpy()
