"""P2: what mining adds on top of the raw nearest-neighbour search.

Same ``Searcher`` (exact), same queries: the raw search alone (``searcher.search`` over the same
query blocks, at the sampler's candidate depth) vs the full ``mine()`` call (search + exclusion
masking + filters + sampling + invariant check). Ratio = median(full) / median(raw). Goal <= 1.15.

    python benchmarks/p2_sampling_overhead.py [--repeat 3] [--depth 100] [--workloads scifact random]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from p1_mining_vs_st import load_workload  # noqa: E402


def samplers(depth: int) -> list[tuple[str, dict]]:
    return [
        (f"topk range_max {depth}", {"kind": "topk", "range_max": depth}),
        (f"simans a=0.5 depth {depth}", {"kind": "simans", "a": 0.5, "b": 0.0, "depth": depth}),
        (f"resa2 k1={depth} k1'={depth // 2} k2=20", {"kind": "resa2", "k1": depth, "k1_prime": depth // 2, "k2": 20}),
        ("resa2 k1=1000 k1'=500 k2=75 (paper)", {"kind": "resa2", "k1": 1000, "k1_prime": 500, "k2": 75}),
    ]


def raw_search(searcher, query_emb, query_rows: np.ndarray, depth: int, block: int) -> None:
    """Exactly the search calls ``mine`` makes: one ``search`` per block of unique query rows."""
    for start in range(0, len(query_rows), block):
        uq = query_rows[start : start + block]
        next(iter(searcher.search(query_emb[uq], depth, len(uq))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--query-block", type=int, default=1024)
    ap.add_argument("--workloads", nargs="+", default=["scifact", "random"], choices=["scifact", "random"])
    ap.add_argument("--random-docs", type=int, default=200_000)
    ap.add_argument("--random-queries", type=int, default=5_000)
    args = ap.parse_args()
    C.require_data("scifact")

    from synth.index import Searcher
    from synth.mine import build_pairs, mine
    from synth.samplers import build_sampler

    rows, notes, skipped = [], [], []
    for wl in args.workloads:
        label, data, corpus_emb, query_emb = load_workload(wl, args.random_docs, args.random_queries)
        pairs = build_pairs(data)
        uq = np.asarray(list(dict.fromkeys(pairs.query_rows.tolist())), np.int64)  # mine's query order
        searcher = Searcher(corpus_emb, "Flat", "cosine", "cpu", 32, 128, 262_144, 0, 2**34)
        for name, spec in samplers(args.depth):
            cfg = C.mine_cfg(spec, n=args.n)
            if cfg is None:
                skipped.append(f"{name}: sampler {spec['kind']!r} not registered")
                continue
            depth = build_sampler(cfg.sampler).candidate_depth(len(data.corpus))
            raw_search(searcher, query_emb, uq, depth, args.query_block)  # warm-up
            mine(data, pairs, corpus_emb, query_emb, searcher, cfg, args.query_block, 0)
            t_raw, t_full, parts = [], [], []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                raw_search(searcher, query_emb, uq, depth, args.query_block)
                t_raw.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                _, stats = mine(data, pairs, corpus_emb, query_emb, searcher, cfg, args.query_block, 0)
                t_full.append(time.perf_counter() - t0)
                parts.append((stats.search_seconds, stats.sample_seconds))
            raw, full = statistics.median(t_raw), statistics.median(t_full)
            s_search = statistics.median(p[0] for p in parts)
            s_sample = statistics.median(p[1] for p in parts)
            rows.append(
                [
                    label,
                    name,
                    depth,
                    raw,
                    full,
                    full / raw,
                    "yes" if full / raw <= 1.15 else "NO",
                    s_search,
                    s_sample,
                    full - s_search - s_sample,
                ]
            )
            print(rows[-1], flush=True)
        notes.append(f"{label}: {len(data.corpus):,} docs, {len(uq):,} queries, {len(pairs):,} pairs.")

    headers = [
        "workload",
        "sampler",
        "depth",
        "raw search s",
        "full mine() s",
        "ratio full/raw",
        "<= 1.15",
        "mine: search s",
        "mine: sample s",
        "mine: other s (masking, filters, blocks, invariant)",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = (
        [
            f"Exact search (faiss.knn over the embedding matrix), query_block {args.query_block}, n = {args.n}; "
            f"median of {args.repeat} runs after a warm-up; raw and full runs alternated.",
            "'mine: search / sample' are mine()'s own MineStats timers; 'other' = full − search − sample.",
        ]
        + notes
        + [f"not run: {s}" for s in skipped]
    )
    C.write_result("P2: sampling overhead, full mine() vs raw search", table, notes)


if __name__ == "__main__":
    main()
