"""(b) Mining at corpus scale: synth's ``index.factory: auto`` (ANN + exact re-ranking) against
sentence-transformers ``mine_hard_negatives(use_faiss=True)`` (an exact ``IndexFlatIP``), 1M docs x 50k queries.

Vectors are real text embeddings (random vectors make ANN recall meaningless): distinct word windows
(12, 20 and 32 words, stride 2) of the SciFact and Cranfield passages are the corpus; each query is a
6-word window from the middle of one corpus passage, its positive. Both tools get the same vectors, from
a static model built here from the bundled all-MiniLM-L6-v2's own token embeddings
(``StaticEmbedding``: mean of the input-token vectors, normalised), so encoding is cheap and identical.
Encoding is excluded from both timings (sentence-transformers' ``cache_folder`` is pre-populated with
the very vectors synth mines); the time sentence-transformers spends encoding them is measured
separately and reported (its split: encode vs search).

Timed, once each (the 1M x 50k exact searches take minutes):
- synth ANN: ``build_pairs`` + ``Searcher.from_config`` (auto: train, add, recall calibration on a
  content-seeded sample) + ``mine`` (topk sampler: search, masking, sampling) + ``build_rows`` +
  ``Dataset.from_dict``;
- synth exact: the same with ``index.factory: Flat``: the exact top-n baseline, and the reference for recall;
- ST: ``mine_hard_negatives(use_faiss=True, sampling_strategy="top", range_max=D, num_negatives=n,
  output_format="n-tuple", cache_folder=...)``.
Goals: synth ANN <= 0.3x ST's time, with >= 0.99 of the exact top-n negatives recovered.

    python benchmarks/bench_ann.py [--docs 1000000] [--queries 50000] [--depth 100] [-n 5]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

WINDOWS = (12, 20, 32)  # corpus passages: word windows of these lengths, every second word
QUERY_WORDS = 6


def passages_words() -> list[list[str]]:
    data = C.require_data("scifact", "cranfield")
    out = []
    with gzip.open(data / "scifact" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        out += [(r["title"] + " " + r["text"]).split() for r in map(json.loads, f)]
    with open(data / "cranfield" / "corpus.jsonl", encoding="utf-8") as f:
        out += [(r["title"] + " " + r["text"]).split() for r in map(json.loads, f)]
    return out


def make_texts(n_docs: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str], list[int]]:
    """(corpus texts, query texts, positive row per query): distinct texts, a pure function of the data."""
    windows = {}
    for length in WINDOWS:
        for words in passages_words():
            for s in range(0, len(words) - length + 1, 2):
                windows.setdefault(" ".join(words[s : s + length]))
    if len(windows) < n_docs:
        raise SystemExit(f"only {len(windows):,} distinct windows; ask for fewer --docs")
    rng = np.random.default_rng(seed)
    pool = list(windows)
    docs = [pool[i] for i in np.sort(rng.choice(len(pool), n_docs, replace=False))]
    doc_set = set(docs)
    queries, positives, seen = [], [], set()
    for row in rng.permutation(n_docs).tolist():
        words = docs[row].split()
        mid = (len(words) - QUERY_WORDS) // 2
        q = " ".join(words[mid : mid + QUERY_WORDS])
        if q not in seen and q not in doc_set:
            seen.add(q)
            queries.append(q)
            positives.append(row)
            if len(queries) == n_queries:
                break
    return docs, queries, positives


def static_model():
    """The bundled MiniLM's input-token embedding table as a StaticEmbedding model (no transformer)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding

    mini = C.bundled_model()
    table = mini[0].auto_model.embeddings.word_embeddings.weight.detach().clone()
    return SentenceTransformer(modules=[StaticEmbedding(mini.tokenizer, embedding_weights=table)], device="cpu")


def encode(model, texts: list[str]) -> np.ndarray:
    return model.encode(texts, batch_size=4096, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)


def cached_vectors(model, docs, queries) -> tuple[np.ndarray, np.ndarray, float]:
    """(corpus memmap, query vectors, encode seconds of a cold run) cached under $SYNTH_CACHE_DIR. The
    queries of a smaller --queries are a prefix of a larger one's: a cache with more of them serves."""
    root = C.CACHE_DIR / "bench_ann"
    larger = sorted(
        (int(p.name.split("x")[1]), p)
        for p in root.glob(f"{len(docs)}x*")
        if (p / "encode_seconds.json").exists() and int(p.name.split("x")[1]) >= len(queries)
    )
    if larger:
        folder = larger[0][1]
        seconds = json.loads((folder / "encode_seconds.json").read_text())["seconds"]
        per_text = seconds / (len(docs) + larger[0][0])
        q = np.load(folder / "queries.npy")[: len(queries)]
        return np.load(folder / "corpus.npy", mmap_mode="r"), q, per_text * (len(docs) + len(queries))
    folder = root / f"{len(docs)}x{len(queries)}"
    cf, qf, tf = folder / "corpus.npy", folder / "queries.npy", folder / "encode_seconds.json"
    if not tf.exists():
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        corpus, q = encode(model, docs), encode(model, queries)
        seconds = time.perf_counter() - t0
        for path, arr in ((cf, corpus), (qf, q)):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, path)
        tf.write_text(json.dumps({"seconds": seconds, "texts": len(docs) + len(queries)}))
        del corpus
    return np.load(cf, mmap_mode="r"), np.load(qf), json.loads(tf.read_text())["seconds"]


def synth_mine(data, corpus_emb, query_emb, factory: str, depth: int, n: int) -> tuple[dict, object, dict]:
    """The timed synth path; (timings, mined, report["index"])."""
    import datasets

    from synth.formats.rows import build_rows
    from synth.index import Searcher
    from synth.mine import build_pairs, mine
    from synth.recipe import IndexConfig

    cfg = C.mine_cfg({"kind": "topk", "range_max": depth}, n=n)
    t0 = time.perf_counter()
    pairs = build_pairs(data)
    searcher = Searcher.from_config(IndexConfig(factory=factory), corpus_emb, 0, top_n=n, n_queries=len(query_emb))
    t1 = time.perf_counter()
    mined, stats = mine(data, pairs, corpus_emb, query_emb, searcher, cfg, 1024, 0)
    t2 = time.perf_counter()
    cols, _ = build_rows("n-tuple", n, pairs, mined, data.corpus, data.queries)
    datasets.Dataset.from_dict(cols)
    t3 = time.perf_counter()
    info = searcher.info.as_dict()
    timings = {
        "total": t3 - t0,
        "build": info["build_seconds"],
        "calibrate": info["calibration_seconds"],
        "search": stats.search_seconds - info["calibration_seconds"],
        "sample": stats.sample_seconds,
        "other": (t3 - t0) - info["build_seconds"] - stats.search_seconds - stats.sample_seconds,
        "mine": t2 - t1,
    }
    return timings, mined, info


def st_mine(model, qtext, ptext, corpus, depth, n, cache):
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    ds = Dataset.from_dict({"query": qtext, "positive": ptext})
    return mine_hard_negatives(
        ds,
        model,
        corpus=corpus,
        range_max=depth,
        num_negatives=n,
        sampling_strategy="top",
        use_faiss=True,
        output_format="n-tuple",
        cache_folder=str(cache),
        verbose=False,
    )


def recovered(rows, scores, ref_rows, ref_scores, n: int) -> tuple[float, float]:
    """Share of the reference's exact negatives (pair by pair) that a run found: by row, and counting a
    negative whose score reaches the reference's n-th negative's score (a tie) as found."""
    by_row = np.mean([len(set(x.tolist()) & set(y.tolist())) / n for x, y in zip(rows, ref_rows)])
    bound = np.nanmin(ref_scores, axis=1, keepdims=True)
    tie = ((scores >= bound - 1e-5) & (rows >= 0)).sum(1).clip(max=n)
    return float(by_row), float(tie.mean() / n)


def st_lists(st_out, docs, pairs, corpus_emb, query_emb, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ST's negatives as corpus rows per pair (its n-tuple rows come in the dataset's order), and their scores."""
    if len(st_out) != len(pairs):
        raise SystemExit(f"sentence-transformers returned {len(st_out)} rows for {len(pairs)} pairs")
    row_of = {t: r for r, t in enumerate(docs)}
    cols = [f"negative_{i}" for i in range(1, n + 1)]
    rows = np.asarray([[row_of[t] for t in r] for r in zip(*(st_out[c] for c in cols))], np.int64)
    q = np.asarray(query_emb)[pairs.query_rows]
    scores = np.einsum("pd,pkd->pk", q, np.asarray(corpus_emb[rows.ravel()]).reshape(*rows.shape, -1))
    return rows, scores.astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=50_000)
    ap.add_argument("--depth", type=int, default=100, help="candidates per query (ST range_max, synth topk)")
    ap.add_argument("-n", type=int, default=5, help="negatives per pair")
    ap.add_argument("--factory", default="auto", help="synth's ANN index (auto: Flat below 1M vectors)")
    ap.add_argument("--no-append", action="store_true", help="print only (trial runs)")
    ap.add_argument(
        "--no-exact", action="store_true", help="skip synth's exact run (ST's exact lists are then the reference)"
    )
    args = ap.parse_args()
    from synth.core.records import Corpus, Queries, SourceData

    t_all = time.perf_counter()
    docs, queries, positives = make_texts(args.docs, args.queries)
    model = static_model()
    corpus_emb, query_emb, encode_s = cached_vectors(model, docs, queries)
    ids = [f"d{i}" for i in range(len(docs))]
    data = SourceData(
        Corpus(ids, docs),
        Queries([f"q{j}" for j in range(len(queries))], queries),
        {f"q{j}": {ids[p]: 1} for j, p in enumerate(positives)},
    )
    ptext = [docs[p] for p in positives]
    cache = C.CACHE_DIR / "st-cache" / f"bench_ann-{args.docs}x{args.queries}"
    C.st_prepopulate(model, queries, query_emb, docs, corpus_emb, ptext, cache)
    print(f"data ready in {time.perf_counter() - t_all:.0f}s (encode {encode_s:.0f}s, cached)", flush=True)

    ann_t, ann_mined, ann_info = synth_mine(data, corpus_emb, query_emb, args.factory, args.depth, args.n)
    print("synth ANN", {k: round(v, 1) for k, v in ann_t.items()}, ann_info, flush=True)
    with C.Clock() as st_clk:
        st_out = st_mine(model, queries, ptext, docs, args.depth, args.n, cache)
    print(f"ST {st_clk.wall:.1f}s", flush=True)
    from synth.mine import build_pairs

    pairs = build_pairs(data)
    st_rows, st_scores = st_lists(st_out, docs, pairs, corpus_emb, query_emb, args.n)
    if args.no_exact:
        exact_t, ref = None, (st_rows, st_scores)
        st_share = 1.0
    else:
        exact_t, exact_mined, _ = synth_mine(data, corpus_emb, query_emb, "Flat", args.depth, args.n)
        print("synth exact", {k: round(v, 1) for k, v in exact_t.items()}, flush=True)
        ref = (exact_mined.negative_rows, exact_mined.negative_scores)
        st_share = recovered(st_rows, st_scores, *ref, args.n)[0]
    by_row, with_ties = recovered(ann_mined.negative_rows, ann_mined.negative_scores, *ref, args.n)
    ratio = ann_t["total"] / st_clk.wall
    shape = f"{len(docs):,} docs x {len(queries):,} queries, 384-d, depth {args.depth}, n {args.n}"
    rows = [
        [
            f"synth {args.factory}: {ann_info['factory']}",
            shape,
            ann_t["total"],
            ratio,
            "yes" if ratio <= 0.3 else "NO",
            f"{with_ties:.4f} ({by_row:.4f} by row)",
            "yes" if with_ties >= 0.99 else "NO",
            f"build {ann_t['build']:.1f}, calibrate {ann_t['calibrate']:.1f}, search {ann_t['search']:.1f}, "
            f"sample {ann_t['sample']:.1f}, other {ann_t['other']:.1f}",
        ],
        [
            "sentence-transformers mine_hard_negatives(use_faiss=True)",
            shape,
            st_clk.wall,
            1.0,
            "-",
            "1 (reference)" if args.no_exact else f"{st_share:.4f} (by row)",
            "-",
            f"encode (excluded, measured apart) {encode_s:.1f}",
        ],
    ]
    if exact_t is not None:
        rows.insert(
            1,
            [
                "synth exact (Flat): exact top-n baseline",
                shape,
                exact_t["total"],
                exact_t["total"] / st_clk.wall,
                "-",
                "1 (reference)",
                "-",
                f"search {exact_t['search']:.1f}, sample {exact_t['sample']:.1f}, other {exact_t['other']:.1f}",
            ],
        )
    headers = ["method", "size", "wall s", "/ ST", "<= 0.3x", "exact top-n recovered", ">= 0.99", "split s"]
    table = C.md_table(headers, rows)
    print(table)
    notes = [
        "Corpus: distinct 12/20/32-word windows (stride 2) of the SciFact + Cranfield passages; queries: the middle "
        f"{QUERY_WORDS} words of a corpus passage, its positive. Vectors: a StaticEmbedding built from the bundled "
        "all-MiniLM-L6-v2's token embedding table (mean pooling, normalised), shared by both tools.",
        f"Encoding excluded from every timing (ST's cache_folder pre-populated with synth's vectors); encoding the "
        f"{len(docs) + len(queries):,} texts with the static model took {encode_s:.1f} s (ST's encode share: "
        f"{encode_s:.1f} s encode + {st_clk.wall:.1f} s search = {encode_s + st_clk.wall:.1f} s).",
        f"synth ANN index: {ann_info['factory']}, nprobe {ann_info['nprobe']} / efSearch {ann_info['ef_search']} "
        f"after calibration to target_recall {ann_info['target_recall']} on {ann_info['recall_queries']} sampled "
        f"queries: recall@{ann_info['recall_k']} {ann_info['recall_at_k']:.4f}, recall@{ann_info['recall_n']} "
        f"{ann_info['recall_at_n']:.4f} (report['index']); refine_factor {ann_info['refine_factor']}.",
        f"'exact top-n recovered': per (query, positive) pair, the share of the exact negatives ({'ST' if args.no_exact else 'synth Flat'}: the reference) that the "
        "run found; ties (a negative scoring at least the exact n-th negative's score) count as found; 'by row' "
        "counts the very rows. Each run once (minutes each); other helpers shared the 2 cores at the time "
        "(the load average below).",
        f"Whole script: {time.perf_counter() - t_all:.0f} s wall.",
    ]
    print("\n".join(notes))
    if not args.no_append:
        title = (
            f"(b) ANN + exact re-ranking vs sentence-transformers mine_hard_negatives, {len(docs):,} x {len(queries):,}"
        )
        C.write_result(title, table, notes)


if __name__ == "__main__":
    main()
