"""The FAISS factory string of a run's index: the ``auto`` choice for a corpus size and memory budget, and the
checks a string must pass before any embedding (faiss can parse it, the corpus can train it), so a recipe that
cannot work fails at load, not after hours of embedding. ``synth.index.Searcher`` builds and searches it."""

from __future__ import annotations

import math
import re

from synth.core.errors import UserError

FLAT_MAX_VECTORS = 1_000_000  # the survey's appendix D: exact search is practical below ~1M vectors
HNSW_LINK_BYTES = 32 * 2 * 4  # HNSW32: ~2M int32 links per node on level 0
IVF_ID_BYTES = 8  # an inverted list stores an int64 id per vector
EF_SEARCH_CAP = 4096  # the calibration stops doubling efSearch here
AUTO_EXACT_SCAN = 0.25  # auto: an IVF that must probe more than this share of its lists searches exactly instead


def nlist_for(n: int) -> int:
    """~sqrt(n) inverted lists, a power of 2 (1024 at 1M vectors, 4096 at 16M). Fewer lists than faiss's
    4-16 sqrt(n) guideline: k-means on 2 cores stays cheap, and the calibrated nprobe with an exact re-ranking
    buys back the recall."""
    return 1 << max(1, round(math.log2(math.sqrt(n))))


def choose_factory(n: int, d: int, memory_budget_bytes: float, n_queries: int | None = None) -> str:
    """``auto``: ``Flat`` below ~1M vectors (exact, the digests' path). Above, a compressed index whose
    shortlist is re-ranked exactly (``Refine``), the first that fits the memory budget:

    - ``HNSW32,SQ8,Refine(Flat)`` when there are at least n/4 queries (``n_queries``): the graph costs about
      n searches to build, which many queries pay back (an IVF query scans nprobe x n/nlist vectors);
    - ``IVF{nlist},SQ8,Refine(Flat)``: 1-byte codes for the scan, the float vectors for the re-ranking;
    - ``IVF{nlist},SQ8,Refine(SQfp16)``: the full vectors do not fit; re-ranked from fp16 copies;
    - ``IVF{nlist},PQ{d/8},Refine(SQ8)``: the tightest; re-ranked from 1-byte codes."""
    if n < FLAT_MAX_VECTORS:
        return "Flat"
    nlist = nlist_for(n)
    full, sq8, fp16 = n * d * 4, n * d, n * d * 2
    ivf_sq8 = sq8 + n * IVF_ID_BYTES + nlist * d * 4
    if n_queries is not None and 4 * n_queries >= n and full + sq8 + n * HNSW_LINK_BYTES <= memory_budget_bytes:
        return "HNSW32,SQ8,Refine(Flat)"
    if full + ivf_sq8 <= memory_budget_bytes:
        return f"IVF{nlist},SQ8,Refine(Flat)"
    if fp16 + ivf_sq8 <= memory_budget_bytes:
        return f"IVF{nlist},SQ8,Refine(SQfp16)"
    m = next(m for m in (d // 8, d // 16, d // 4, 8, 4, 2, 1) if m > 0 and d % m == 0)
    return f"IVF{nlist},PQ{m},Refine(SQ8)"


PROBE_DIM = 64  # a stand-in dimension to parse a factory string before the embeddings exist
MIN_POINTS_PER_CENTROID = 39  # faiss's k-means warns below this many training vectors per list


def faiss_reason(err: RuntimeError) -> str:
    """The human part of a faiss C++ error ("Error in <signature> at <file>:<line>: <reason>")."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.split(r"\.(?:cpp|h):\d+: ", text)[-1]
    return re.sub(r"^Error: '.*?' failed: ", "", text)


def check_training(faiss, index, factory: str, n: int, train_size: int) -> list[str]:
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
        index = faiss.index_factory(PROBE_DIM, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        if "could not parse" in str(e):
            raise UserError(f"index.factory: faiss cannot build {factory!r}: {faiss_reason(e)}") from None
        return
    check_training(faiss, index, factory, n, train_size)
