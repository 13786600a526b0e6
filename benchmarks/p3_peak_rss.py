"""P3: peak resident memory while mining a 1M x 384 float32 corpus (1.536 GB of embeddings).

The corpus (random unit vectors, seeded) is written once to an on-disk .npy and opened with
``mmap_mode="r"``, as synth's embedding cache does. Each configuration runs in a fresh child
process that builds the records (1M ids and texts "doc i"), opens the memmap, builds the exact
``Searcher`` and calls ``mine()``; the child reports its own peak RSS (``ru_maxrss``) and the parent
cross-checks ``RUSAGE_CHILDREN``. Pages of the memmap that the search touches count in RSS.
No embedding model is loaded (the embeddings are precomputed): add the model's own memory
(all-MiniLM-L6-v2: ~90 MB of weights, a few hundred MB with torch) for a run that encodes.
Goal: peak RSS <= 1.5 x embedding bytes.

    python benchmarks/p3_peak_rss.py [--docs 1000000] [--queries 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONFIGS = {
    "topk range_max 100": {"kind": "topk", "range_max": 100},
    "resa2 k1=200 k1'=100 k2=20": {"kind": "resa2", "k1": 200, "k1_prime": 100, "k2": 20},
}


def _rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(path: str, n_queries: int, sampler: dict, n: int, seed: int) -> None:
    """Runs in the child: mine and print one JSON line with the memory figures."""
    t_start = time.perf_counter()
    from synth.index import Searcher
    from synth.mine import build_pairs, mine
    from synth.core.records import Corpus, Queries, SourceData

    rss_imports = _rss_now()
    emb = np.load(path, mmap_mode="r")
    n_docs, dim = emb.shape
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(n_docs, size=n_queries, replace=False))
    q = np.asarray(emb[pos]) + 0.5 * C.random_unit(n_queries, dim, rng)
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    corpus = Corpus([f"d{i}" for i in range(n_docs)], [f"doc {i}" for i in range(n_docs)])
    queries = Queries([f"q{j}" for j in range(n_queries)], [f"query {j}" for j in range(n_queries)])
    data = SourceData(corpus, queries, {f"q{j}": {f"d{int(p)}": 1} for j, p in enumerate(pos)})
    pairs = build_pairs(data)
    rss_records = _rss_now()
    cfg = C.mine_cfg(sampler, n=n)
    searcher = Searcher(emb, "Flat", "cosine", "cpu", 32, 128, 262_144, seed, 2**34)
    t0 = time.perf_counter()
    mined, stats = mine(data, pairs, emb, q, searcher, cfg, 1024, seed)
    t_mine = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(
        json.dumps(
            {
                "peak_rss": peak,
                "rss_after_imports": rss_imports,
                "rss_after_records": rss_records,
                "rss_end": _rss_now(),
                "mine_seconds": t_mine,
                "search_seconds": stats.search_seconds,
                "sample_seconds": stats.sample_seconds,
                "short_pairs": stats.short_pairs,
                "filled": int((mined.negative_rows >= 0).sum()),
                "total_seconds": time.perf_counter() - t_start,
                "embedding_bytes": int(emb.size * emb.itemsize),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--child", nargs=2, metavar=("NPY", "SAMPLER_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.queries, json.loads(args.child[1]), args.n, 0)
        return
    # No shared data needed: the corpus is synthetic, so this benchmark never skips.
    from synth.samplers import sampler_kinds

    path = C.CACHE_DIR / "p3" / f"random-unit-{args.docs}x{args.dim}-seed0.npy"
    t0 = time.perf_counter()
    C.write_random_npy(path, args.docs, args.dim, seed=0)
    print(f"corpus file {path} ready in {time.perf_counter() - t0:.1f}s", flush=True)
    emb_bytes = args.docs * args.dim * 4
    rows, skipped, notes = [], [], []
    for name, sampler in CONFIGS.items():
        if sampler["kind"] not in sampler_kinds():
            skipped.append(f"{name}: sampler {sampler['kind']!r} not registered")
            continue
        _drop_page_cache_hint(path)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(path),
                json.dumps(sampler),
                "--queries",
                str(args.queries),
                "-n",
                str(args.n),
            ],
            capture_output=True,
            text=True,
            timeout=4 * 3600,  # a benchmark run, not a hang
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        peak = res["peak_rss"]
        rows.append(
            [
                name,
                f"{peak / 1e9:.3f} GB",
                peak / emb_bytes,
                "yes" if peak / emb_bytes <= 1.5 else "NO",
                f"{res['rss_after_imports'] / 1e9:.3f} GB",
                f"{res['rss_after_records'] / 1e9:.3f} GB",
                f"{res['mine_seconds']:.1f}",
            ]
        )
        notes.append(
            f"{name}: child ru_maxrss {peak:,} B; parent RUSAGE_CHILDREN max {after:,} B "
            f"(was {before:,} B before this child); {res['filled']:,} negatives, "
            f"{res['short_pairs']} short pairs; search {res['search_seconds']:.1f}s, "
            f"sample {res['sample_seconds']:.2f}s."
        )
        print(rows[-1], "\n ", notes[-1], flush=True)
    headers = [
        "sampler",
        "peak RSS",
        "peak / embedding bytes",
        "<= 1.5",
        "RSS after imports",
        "RSS after records (1M ids+texts)",
        "mine s",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = (
        [
            f"Corpus: {args.docs:,} x {args.dim} float32 random unit vectors = {emb_bytes / 1e9:.3f} GB, an .npy opened "
            f"with mmap_mode='r'; {args.queries:,} queries (noisy copies of random docs, one positive each); "
            f"exact search (factory Flat, faiss.knn over the memmap), query_block 1024, n = {args.n}.",
            "Peak RSS = the child's whole process: interpreter + numpy + faiss + synth ('RSS after imports'), the 1M "
            "id/text strings with their row_of dicts ('RSS after records', minus the former), and the memmap pages the "
            "search reads (file-backed, counted in RSS). No embedding model is loaded in the child (torch is never "
            "imported by the mining path).",
            "Note: factory 'auto' picks HNSW32 at exactly 1,000,000 vectors (choose_factory uses n < 1_000_000), which "
            "copies the vectors into the index; this benchmark pins Flat.",
        ]
        + notes
        + [f"not run: {s}" for s in skipped]
    )
    C.write_result("P3: peak RSS mining a 1M x 384 memory-mapped corpus", table, notes)


def _drop_page_cache_hint(path: Path) -> None:
    """Ask the kernel to drop the file's cached pages (best effort) so each child starts cold."""
    import os

    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (AttributeError, OSError):
        pass


if __name__ == "__main__":
    main()
