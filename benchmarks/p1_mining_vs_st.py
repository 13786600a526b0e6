"""P1: synth's mining vs sentence-transformers ``mine_hard_negatives``, same embeddings, same depth.

Both get the same precomputed embeddings (synth's cache; ST's ``cache_folder`` is pre-populated with
the very same vectors), so embedding time is excluded from both. Timed:
- synth: ``build_pairs`` + ``Searcher`` (exact) + ``mine`` (search, masking, ``topk`` sampling) +
  ``build_rows`` (n-tuple) + ``Dataset.from_dict``;
- ST: ``mine_hard_negatives(use_faiss=True, sampling_strategy="top", num_negatives=n, range_max=D,
  output_format="n-tuple", cache_folder=...)``: cache load, index, search, masking, rows, Dataset.
Each is run once to warm up, then ``--repeat`` times alternately; ratio = median(synth) / median(ST).
Goal: ratio <= 0.5. Also checks that both return the same top-k negatives.

    python benchmarks/p1_mining_vs_st.py [--repeat 3] [--depth 100] [--workloads scifact random]
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


def load_workload(name: str, n_random_docs: int, n_random_queries: int):
    """(label, SourceData, corpus_emb, query_emb)."""
    if name == "scifact":
        from synth.evaluate.fn_probe import load_and_embed

        data, corpus_emb, query_emb = load_and_embed(C.load_bench_recipe("scifact_train_topk.yaml"))
        return "SciFact train", data, corpus_emb, query_emb
    data, corpus_emb, query_emb = C.random_workload(n_random_docs, n_random_queries)
    return "random unit 384-d", data, corpus_emb, query_emb


def synth_mine(data, corpus_emb, query_emb, cfg, timings: dict):
    """The timed synth path; returns (pairs, mined). Fills ``timings`` with a breakdown."""
    import datasets

    from synth.index import Searcher
    from synth.mine import build_pairs, mine
    from synth.formats.rows import build_rows

    t0 = time.perf_counter()
    pairs = build_pairs(data)
    t1 = time.perf_counter()
    searcher = Searcher(corpus_emb, "Flat", "cosine", "cpu", 32, 128, 262_144, 0, 2**34)
    mined, stats = mine(data, pairs, corpus_emb, query_emb, searcher, cfg, 1024, 0)
    t2 = time.perf_counter()
    cols, _ = build_rows("n-tuple", cfg.n_negatives, pairs, mined, data.corpus, data.queries)
    t3 = time.perf_counter()
    datasets.Dataset.from_dict(cols)
    t4 = time.perf_counter()
    for key, value in (
        ("build_pairs", t1 - t0),
        ("mine", t2 - t1),
        ("search", stats.search_seconds),
        ("sample", stats.sample_seconds),
        ("mine_other", t2 - t1 - stats.search_seconds - stats.sample_seconds),
        ("build_rows", t3 - t2),
        ("Dataset.from_dict", t4 - t3),
    ):
        timings.setdefault(key, []).append(value)
    return pairs, mined


def st_inputs(data):
    from synth.mine import build_pairs

    pairs = build_pairs(data)
    qtext = [data.queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [data.corpus.texts[r] for r in pairs.positive_rows.tolist()]
    return pairs, qtext, ptext


def st_mine(ds, model, corpus_texts, depth, n, cache):
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(
        ds,
        model,
        corpus=corpus_texts,
        range_max=depth,
        num_negatives=n,
        sampling_strategy="top",
        use_faiss=True,
        output_format="n-tuple",
        cache_folder=str(cache),
        verbose=False,
    )


def overlap(data, pairs, qtext, ptext, mined, st_out, n) -> tuple[float, int, int]:
    """Mean |synth ∩ ST| / n over the pairs both filled, the number of such pairs, and of pairs identical."""
    row_of = {t: r for r, t in enumerate(data.corpus.texts)}
    st = {}
    cols = [f"negative_{i}" for i in range(1, n + 1)]
    names = st_out.column_names
    for row in zip(*(st_out[c] for c in [names[0], names[1], *cols])):
        st[(row[0], row[1])] = {row_of[t] for t in row[2:]}
    shares, same = [], 0
    for i, key in enumerate(zip(qtext, ptext)):
        if key in st and (mined.negative_rows[i] >= 0).all():
            mine_set = set(mined.negative_rows[i].tolist())
            shares.append(len(mine_set & st[key]) / n)
            same += mine_set == st[key]
    return (float(np.mean(shares)) if shares else float("nan")), len(shares), same


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("-n", type=int, default=5)
    ap.add_argument("--workloads", nargs="+", default=["scifact", "random"], choices=["scifact", "random"])
    ap.add_argument("--random-docs", type=int, default=200_000)
    ap.add_argument("--random-queries", type=int, default=5_000)
    ap.add_argument("--profile", action="store_true", help="add a cProfile breakdown of one run of each tool")
    args = ap.parse_args()
    C.require_data("scifact")

    from datasets import Dataset

    model = C.bundled_model()
    cfg = C.mine_cfg({"kind": "topk", "range_max": args.depth}, n=args.n)
    rows, notes = [], []
    for wl in args.workloads:
        label, data, corpus_emb, query_emb = load_workload(wl, args.random_docs, args.random_queries)
        pairs, qtext, ptext = st_inputs(data)
        cache = C.CACHE_DIR / "st-cache" / f"p1-{wl}"
        C.st_prepopulate(
            model, qtext, np.asarray(query_emb)[pairs.query_rows], data.corpus.texts, corpus_emb, ptext, cache
        )
        ds = Dataset.from_dict({"query": qtext, "positive": ptext})
        corpus_texts = list(data.corpus.texts)
        timings: dict[str, list[float]] = {}
        synth_mine(data, corpus_emb, query_emb, cfg, {})  # warm-up (imports, page cache)
        st_mine(ds, model, corpus_texts, args.depth, args.n, cache)
        # ST saves new .npy files when it had to encode: exactly our two files means it read ours.
        if sorted(p.name for p in cache.glob("*.npy")) != sorted(
            p.name
            for p in C.st_cache_files(
                model, list(dict.fromkeys(qtext)), list(dict.fromkeys(corpus_texts + ptext)), cache
            )
        ):
            raise SystemExit(f"{cache}: sentence-transformers did not use the pre-populated embeddings")
        t_synth, t_st, c_synth, c_st = [], [], [], []
        for i in range(args.repeat):
            for who in ("synth", "st") if i % 2 == 0 else ("st", "synth"):  # alternate who goes first
                with C.Clock() as clk:
                    if who == "synth":
                        _, mined = synth_mine(data, corpus_emb, query_emb, cfg, timings)
                    else:
                        st_out = st_mine(ds, model, corpus_texts, args.depth, args.n, cache)
                (t_synth if who == "synth" else t_st).append(clk.wall)
                (c_synth if who == "synth" else c_st).append(clk.cpu)
        share, both, same = overlap(data, pairs, qtext, ptext, mined, st_out, args.n)
        ms, mst = statistics.median(t_synth), statistics.median(t_st)
        cs, cst = statistics.median(c_synth), statistics.median(c_st)
        shape = f"{len(data.corpus):,} docs / {len(data.queries):,} queries / {len(pairs):,} pairs"
        rows.append(
            [
                label,
                shape,
                ms,
                mst,
                ms / mst,
                "yes" if ms / mst <= 0.5 else "NO",
                min(t_synth) / min(t_st),
                cs / cst,
                f"{share:.4f} ({same}/{both} identical)",
            ]
        )
        brk = ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in timings.items())
        notes.append(
            f"{label}: synth wall {[round(t, 3) for t in t_synth]} s, ST wall {[round(t, 3) for t in t_st]} s; "
            f"synth breakdown (medians): {brk}."
        )
        print(rows[-1], "\n ", notes[-1], flush=True)
        if args.profile:
            notes.append(
                f"{label}, cProfile own time, synth: "
                + C.profile_top(lambda: synth_mine(data, corpus_emb, query_emb, cfg, {}))
            )
            notes.append(
                f"{label}, cProfile own time, ST: "
                + C.profile_top(lambda: st_mine(ds, model, corpus_texts, args.depth, args.n, cache))
            )
            print(notes[-2], "\n", notes[-1], flush=True)

    headers = [
        "workload",
        "size",
        "synth s (median)",
        "ST s (median)",
        "ratio synth/ST",
        "<= 0.5",
        "ratio of best runs",
        "ratio of CPU s",
        "top-k overlap with ST",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = [
        f"D = range_max = {args.depth}, n = {args.n}, synth sampler topk (pick top), ST sampling_strategy top, "
        f"use_faiss=True (IndexFlatIP), both exact inner product on the same float32 embeddings; "
        f"median of {args.repeat} runs after one warm-up each, same process, alternating which tool goes first. "
        "'ratio of best runs' = min/min; 'ratio of CPU s' = process CPU time (all threads), less sensitive to "
        "other load on the machine.",
        "Embedding time excluded: synth reads its memory-mapped cache, ST loads the pre-populated "
        "query_/corpus_embeddings_<sha256>.npy of its cache_folder (that np.load is inside ST's time).",
        "Random workload: unit vectors (seed 0), each query = its positive doc + 0.5 x a random unit vector, "
        "renormalised; texts 'doc i' / 'query j'.",
        "Overlap: share of synth's 5 negatives that ST also returned, over the pairs both filled.",
    ] + notes
    C.write_result("P1: mining wall time, synth vs sentence-transformers mine_hard_negatives", table, notes)


if __name__ == "__main__":
    main()
