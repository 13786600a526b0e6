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
import re
import time
from typing import Iterator, Optional

import numpy as np
from pydantic import Field

from synth.core.device import resolve_device
from synth.core.errors import UserError
from synth.core.strict import Section
from synth.index_factory import AUTO_EXACT_SCAN, EF_SEARCH_CAP, check_training, choose_factory, faiss_reason

log = logging.getLogger("synth.index")


class SearchInfo(Section):
    """The FAISS index that mining searched: ``report.json`` -> ``index``."""

    factory: str
    metric: str
    device: str
    k: int
    vectors: int
    dim: int
    build_seconds: float = 0.0
    search_seconds: float = 0.0
    notes: list[str] = Field(default_factory=list)
    recall: str = Field(
        "exact",
        description="'exact' (Flat: recall 1 by construction) or 'sampled' (an approximate index, measured "
        "against exact search on recall_queries content-seeded queries)",
    )
    recall_at_k: Optional[float] = Field(1.0, description="searched top-k (the sampler's candidates) vs exact top-k")
    recall_at_n: Optional[float] = Field(1.0, description="searched top-n vs exact top-n, n = the negatives per pair")
    recall_k: int = 0
    recall_n: int = 0
    recall_queries: int = 0
    target_recall: Optional[float] = None
    calibration_seconds: float = 0.0
    nprobe: Optional[int] = Field(None, description="IVF lists probed per query, after calibration")
    ef_search: Optional[int] = Field(None, description="HNSW search breadth, after calibration")
    refine_factor: Optional[float] = Field(None, description="shortlist factor of the exact re-ranking (Refine)")


class Searcher:
    """Built once per run; ``search`` yields (start, scores [b, k], rows [b, k]) per query block.

    An approximate index (anything but ``Flat``) measures its recall against exact search on a
    content-seeded sample of the queries before its first search (``calibrate``), and, with
    ``target_recall`` set, doubles nprobe / efSearch until the sample's recall@k reaches it. The built
    index, with the calibrated parameters applied, is ``_index`` (what a remote engine serialises)."""

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
        *,
        refine_factor: float = 4.0,
        target_recall: float | None = None,
        recall_sample: int = 1000,
        top_n: int = 10,
        n_queries: int | None = None,
        engine=None,
    ):
        import faiss

        n, d = corpus_emb.shape
        self.corpus_emb = corpus_emb
        self.factory = choose_factory(n, d, memory_budget_bytes, n_queries) if factory == "auto" else factory
        self.device = resolve_device(device)
        self.seed, self.recall_sample, self.top_n = seed, recall_sample, top_n
        self.info = SearchInfo(
            factory=self.factory, metric=metric, device=self.device, k=0, vectors=n, dim=d, target_recall=target_recall
        )
        t0 = time.perf_counter()
        self._index = None
        self._torch_corpus = None
        self._breadth: tuple[str, int, int] | None = None  # (faiss parameter, value, cap) that calibration doubles
        self._calibrated = False
        self._auto = factory == "auto"
        self.remote = None  # what searches in an engine's worker processes (synth.engine); None: here
        if self.factory == "Flat":
            if self.device == "cuda":
                import torch

                self._torch_corpus = torch.from_numpy(np.asarray(corpus_emb)).to("cuda", torch.float32)
                self.info.notes.append("exact search as fp32 torch matmul + topk on CUDA")
        else:
            self._index = self._build_index(faiss, corpus_emb, train_size, nprobe, ef_search, refine_factor)
            self.info.recall, self.info.recall_at_k, self.info.recall_at_n = "sampled", None, None
        self.info.build_seconds = time.perf_counter() - t0
        log.info("index %s (%s) on %s: %d x %d", self.factory, metric, self.device, n, d)
        if engine is not None:
            self.remote = engine.searcher_remote(self)

    def _build_index(self, faiss, corpus_emb, train_size: int, nprobe: int, ef_search: int, refine_factor: float):
        """The FAISS index of ``self.factory`` over the corpus: trained on a seeded sample when it needs training,
        filled in chunks, its search parameters set, moved to the GPUs on ``cuda``."""
        n, d = corpus_emb.shape
        try:
            index = faiss.index_factory(d, self.factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as e:
            raise UserError(
                f"index.factory: faiss cannot build {self.factory!r} for {d}-dim vectors: {faiss_reason(e)}"
            ) from None
        self.info.notes += check_training(faiss, index, self.factory, n, train_size)
        if not index.is_trained:
            n_train = min(n, train_size)
            rng = np.random.default_rng(self.seed)
            take = np.sort(rng.choice(n, size=n_train, replace=False))
            try:  # e.g. PQ's 256 centroids per sub-quantizer on a tiny corpus: faiss asserts
                index.train(np.ascontiguousarray(corpus_emb[take], dtype=np.float32))
            except RuntimeError as e:
                raise UserError(
                    f"index.factory: {self.factory} cannot be trained on {n_train} vectors: {faiss_reason(e)}; use Flat"
                ) from None
        for start in range(0, n, 65536):
            index.add(np.ascontiguousarray(corpus_emb[start : start + 65536], dtype=np.float32))
        self._set_search_parameters(faiss, index, nprobe, ef_search, refine_factor)
        if self.device == "cuda":
            if not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() == 0:
                raise UserError(
                    "index.device: a GPU is present but this faiss build has no GPU support; "
                    "install synth[gpu] or set index.device: cpu"
                )
            index = faiss.index_cpu_to_all_gpus(index)
        return index

    def _set_search_parameters(self, faiss, index, nprobe: int, ef_search: int, refine_factor: float) -> None:
        """nprobe / efSearch / the re-ranking shortlist factor on the (CPU) index, recorded in ``info``."""
        base = index
        if isinstance(index, faiss.IndexRefine):
            index.k_factor = refine_factor
            self.info.refine_factor = refine_factor
            base = faiss.downcast_index(index.base_index)
            refine = re.search(r"Refine\((\w+)\)", self.factory)
            if refine and refine.group(1) != "Flat":
                self.info.notes.append(
                    f"re-ranked from {refine.group(1)} codes, not the float vectors (they do not fit "
                    "index.memory_budget_gb): the shortlist's scores are close to, not equal to, exact"
                )
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None:
            ivf.nprobe = nprobe
            self.info.nprobe = nprobe
            self._breadth = ("nprobe", nprobe, ivf.nlist)
        if hasattr(base, "hnsw"):
            base.hnsw.efSearch = ef_search
            self.info.ef_search = ef_search
            self._breadth = ("efSearch", ef_search, max(ef_search, EF_SEARCH_CAP))

    @classmethod
    def from_config(
        cls, index_cfg, corpus_emb: np.ndarray, seed: int, *, top_n: int = 10, n_queries: int | None = None, engine=None
    ) -> "Searcher":
        """Build from a recipe's ``index`` section; the memory budget defaults to half the free RAM.
        ``top_n`` (the negatives per pair) is the n of the reported recall@n; ``n_queries`` informs ``auto``;
        ``engine`` (``synth.engine.Engine``) may search in its workers (``remote``)."""
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
            refine_factor=index_cfg.refine_factor,
            target_recall=index_cfg.target_recall,
            recall_sample=index_cfg.recall_sample,
            top_n=top_n,
            n_queries=n_queries,
            engine=engine,
        )

    def calibrate(self, query_emb: np.ndarray, k: int, top_n: int | None = None) -> None:
        """Once, for an approximate index: recall@k and recall@n of its lists against exact top-k
        (``faiss.knn`` over the corpus matrix) on a content-seeded sample of ``query_emb``; with
        ``target_recall`` set, nprobe / efSearch doubled until recall@k reaches it (or the cap). Called by
        the first ``search`` when nobody called it first (then on that search's queries)."""
        if self._index is None or self._calibrated or k <= 0 or len(query_emb) == 0:
            return
        import faiss

        t0 = time.perf_counter()
        self._calibrated = True
        k = min(k, self.corpus_emb.shape[0])
        n = min(top_n or self.top_n, k)
        q = _recall_queries(query_emb, self.recall_sample, self.seed)
        exact, _ = faiss.knn(q, self.corpus_emb, k, metric=faiss.METRIC_INNER_PRODUCT)
        target = self.info.target_recall
        while True:
            _, rows = self._index.search(q, k)
            at_k = _recall(q, self.corpus_emb, rows, exact[:, k - 1])
            if target is None or at_k >= target or self._breadth is None or self._breadth[1] >= self._breadth[2]:
                break
            name, value, cap = self._breadth
            if self._auto and name == "nprobe" and 2 * value > AUTO_EXACT_SCAN * cap:
                break  # auto searches exactly rather than scan that much (below)
            self._breadth = (name, min(cap, 2 * value), cap)
            space = faiss.GpuParameterSpace() if self.device == "cuda" else faiss.ParameterSpace()
            space.set_index_parameter(self._index, name, self._breadth[1])
        if self._breadth is not None:
            setattr(self.info, "nprobe" if self._breadth[0] == "nprobe" else "ef_search", self._breadth[1])
        info = self.info
        info.recall_at_k, info.recall_at_n = at_k, _recall(q, self.corpus_emb, rows[:, :n], exact[:, n - 1])
        info.recall_k, info.recall_n, info.recall_queries = k, n, len(q)
        info.calibration_seconds = time.perf_counter() - t0
        short = target is not None and at_k < target
        if short:
            info.notes.append(
                f"recall@{k} {at_k:.4f} stays below index.target_recall {target} at the largest "
                f"{self._breadth[0] if self._breadth else 'breadth'} tried"
            )
        if self._auto and short:
            self._search_exactly(k)
        log.info(
            "index %s: recall@%d %.4f, recall@%d %.4f on %d queries", self.factory, k, at_k, n, info.recall_at_n, len(q)
        )

    def _search_exactly(self, k: int) -> None:
        """``auto``'s way out: when the target recall needs more than a quarter of the IVF lists scanned
        (vectors with little cluster structure), or is out of reach, exact search costs less and is exact;
        say so and search Flat."""
        name, value, cap = self._breadth or ("breadth", 0, 0)
        self.info.notes.append(
            f"auto: {self.factory} gave recall@{k} {self.info.recall_at_k:.4f} at {name} {value} (of {cap}); "
            "reaching index.target_recall costs more than exact search: searching exactly (Flat)"
        )
        self._index = None
        if self.device == "cuda":
            import torch

            self._torch_corpus = torch.from_numpy(np.asarray(self.corpus_emb)).to("cuda", torch.float32)
        self.factory = self.info.factory = "Flat"
        self.info.recall, self.info.recall_at_k, self.info.recall_at_n = "exact", 1.0, 1.0
        self.info.nprobe = self.info.ef_search = self.info.refine_factor = None

    def search(self, query_emb: np.ndarray, k: int, block: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Top-k by inner product, in blocks of ``block`` queries; rows are -1 past the corpus."""

        n = self.corpus_emb.shape[0]
        k_eff = min(k, n)
        self.info.k = max(self.info.k, k)
        self.calibrate(query_emb, k_eff)  # approximate indexes, once: before any list is returned
        if self.remote is not None:  # the same blocks, searched by the engine's workers, yielded in order
            yield from self.remote.search(self, query_emb, k, block)
            return
        for start in range(0, len(query_emb), block):
            t0 = time.perf_counter()
            q = np.ascontiguousarray(query_emb[start : start + block], dtype=np.float32)
            if k_eff == 0:
                scores, rows = np.empty((len(q), 0), np.float32), np.empty((len(q), 0), np.int64)
            elif self._torch_corpus is not None:
                scores, rows = exact_topk(self._torch_topk, q, k_eff, n)
            elif self._index is None:
                scores, rows = exact_topk(self._knn, q, k_eff, n)
            else:
                scores, rows = self._index.search(q, k_eff)
            if k_eff < k:
                pad = k - k_eff
                scores = np.concatenate([scores, np.full((len(q), pad), -np.inf, np.float32)], axis=1)
                rows = np.concatenate([rows, np.full((len(q), pad), -1, np.int64)], axis=1)
            scores, rows = order_ties(scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False))
            self.info.search_seconds += time.perf_counter() - t0
            yield start, scores, rows

    def _knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        return faiss.knn(q, self.corpus_emb, k, metric=faiss.METRIC_INNER_PRODUCT)

    def _torch_topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        qt = torch.from_numpy(q).to("cuda", torch.float32)
        scores, rows = torch.topk(qt @ self._torch_corpus.T, k, dim=1)
        return scores.cpu().numpy(), rows.cpu().numpy()


def order_ties(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's list in the one order every path agrees on: score descending, then corpus row
    ascending; missing rows (-1) last with score -inf. FAISS orders equal scores by whatever its heap did,
    which depends on the block and the thread split; a merge of corpus shards (``synth.engine``) must give
    the local path's lists, so ties are broken here, for both."""
    scores = scores.copy()
    scores[rows < 0] = -np.inf
    if scores.shape[1] < 2:
        return scores, rows
    big = np.where(rows < 0, np.iinfo(np.int64).max, rows)
    order = np.lexsort((big, -scores), axis=-1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _recall_queries(query_emb: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` queries chosen by their content (a seeded order of each vector's hash): the same sample
    whatever the query order, block size or worker."""
    import hashlib

    from synth.core.seeding import seeded_order

    ids = [hashlib.blake2b(np.ascontiguousarray(v, np.float32).tobytes(), digest_size=8).hexdigest() for v in query_emb]
    take = np.sort(np.asarray(seeded_order(ids, seed, "index-recall")[:m], np.int64))
    return np.ascontiguousarray(query_emb[take], dtype=np.float32)


def _recall(q: np.ndarray, corpus_emb: np.ndarray, rows: np.ndarray, kth: np.ndarray, chunk: int = 64) -> float:
    """Share of the ``rows.shape[1]`` slots per query holding a row whose exact score reaches the query's
    exact k-th score ``kth``: recall@k that counts a tied row as a hit (equal scores, e.g. duplicate
    passages, make "which row" arbitrary), re-scored from the corpus matrix whatever the index returned."""
    if rows.size == 0:
        return 1.0
    hits = 0
    for s in range(0, len(q), chunk):
        r = rows[s : s + chunk]
        valid = r >= 0
        vec = np.asarray(corpus_emb[np.where(valid, r, 0).ravel()], np.float32).reshape(*r.shape, -1)
        true = np.einsum("qd,qkd->qk", q[s : s + chunk], vec)
        bound = kth[s : s + chunk, None]
        hits += int(((true >= bound - 1e-5 * np.maximum(1.0, np.abs(bound))) & valid).sum())
    return hits / rows.size


def exact_topk(search, q: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The canonical exact top-``k`` of ``n`` rows: ``search(q, width) -> (scores, rows)`` is any exact
    search (``faiss.knn``, a torch topk), which keeps an arbitrary subset of a tie group cut by ``width``
    (faiss's heap evicts the lowest row among equal scores). Searched one wider than ``k``; a query whose
    last kept score still equals its k-th is searched again twice as wide until the tie group ends inside
    the list, so the result is the first ``k`` of the whole corpus in (score desc, row asc) order: the
    same for the whole corpus and for any merge of corpus shards. Ties at the cut are rare (duplicate
    passages), so this costs one extra column almost always."""
    width = min(k + 1, n)
    scores, rows = search(q, width)
    scores, rows = order_ties(np.asarray(scores, np.float32), np.asarray(rows, np.int64))
    out_s, out_r = np.ascontiguousarray(scores[:, :k]), np.ascontiguousarray(rows[:, :k])
    todo = np.arange(len(q))
    while width > k and len(todo):
        tied = (scores[:, width - 1] == scores[:, k - 1]) & np.isfinite(scores[:, k - 1])
        todo = todo[tied]
        if not len(todo) or width >= n:
            break
        width = min(2 * width, n)
        scores, rows = search(np.ascontiguousarray(q[todo]), width)
        scores, rows = order_ties(np.asarray(scores, np.float32), np.asarray(rows, np.int64))
        out_s[todo], out_r[todo] = scores[:, :k], rows[:, :k]
    return out_s, out_r


def exact_search(
    query_emb: np.ndarray, corpus_emb: np.ndarray, depth: int, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """(rows [Q, k], scores [Q, k]) of the ``depth`` best documents by inner product, best first, with numpy
    alone (no index to build): evaluation and relabelling score every query against the whole corpus."""
    k = min(depth, corpus_emb.shape[0])
    rows = np.empty((len(query_emb), k), np.int64)
    scores = np.empty((len(query_emb), k), np.float32)
    for start in range(0, len(query_emb), block):
        s = query_emb[start : start + block] @ corpus_emb.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(np.arange(k), (len(s), 1))
        ps = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-ps, axis=1, kind="stable")
        rows[start : start + block] = np.take_along_axis(part, order, axis=1)
        scores[start : start + block] = np.take_along_axis(ps, order, axis=1)
    return rows, scores
