"""Ray engine overhead against the local engine on one machine, the per-shard rates it measures, and a
projection (not a measurement) for MS MARCO on N GPU nodes built from those rates.

(a) Side by side in one process, with the cluster started once (``ray.init``, reported on its own line and
    not counted in any ratio):
    - mining: random unit vectors (``_common.random_workload``), exact ``Flat`` search + the ``resa2``
      sampler through ``synth.mine.mine`` with a ``synth.index.Searcher`` whose ``remote`` is the Ray
      engine's (``searcher_remote``) or None; the corpus is a memory-mapped ``.npy`` as in a run;
    - embedding: examples/scifact-mini's corpus through ``synth.embed.embed_texts`` with a cold cache each
      time, the encoder's ``engine`` set to the Ray engine (Ray Data actor pool) or None.
    Every Ray run opens its own ``RayEngine`` on the running cluster (actor start-up counted), and its
    output is compared with the local run's, byte for byte.
(c) Per-shard rates measured in Ray actors (embedding rows/s, exact-search queries/s per block, LLM
    requests/s against tests/support/fake_openai.py at a set latency), then a projection for MS MARCO
    (8.8M passages, 500k queries) on N GPU nodes whose GPU figures are labelled parameters with a source.

    python benchmarks/bench_ray.py [--docs 200000] [--queries 5000] [--repeat 2] [--chunk-rows 4096 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from p4_client_throughput import start_server  # noqa: E402

from synth.engine.llm import LLMShardWorker  # noqa: E402
from synth.engine.workers import SearchWorker  # noqa: E402

for _key, _value in {"SYNTH_PROGRESS": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}.items():
    os.environ.setdefault(_key, _value)

RESA2 = {"kind": "resa2", "k1": 1000, "k1_prime": 500, "k2": 75, "kernel": 0.25}  # the paper's constants
MSMARCO_DOCS, MSMARCO_QUERIES, DIM = 8_841_823, 502_939, 384
# Parameters of the projection: NOT measured here (no GPU in this task); each with its source.
PARAMS = {
    "gpus_per_node": (8, "assumption: an 8-GPU node (DGX A100 / p4d class)"),
    "embed_gpu_rows_s": (
        14_200,
        "sentences/s per GPU, all-MiniLM-L6-v2 on a V100 (sbert.net pretrained-models table; short sentences, "
        "so optimistic for ~80-token passages)",
    ),
    "search_gpu_flops": (
        0.5 * 19.5e12,
        "A100 FP32 peak 19.5 TFLOP/s (NVIDIA A100 datasheet) x 0.5 assumed efficiency for matmul + top-k",
    ),
    "llm_gpu_tokens_s": (
        12_500,
        "output tokens/s per H100, Llama 3.1 8B BF16 under vLLM (third-party figure collected at "
        "morphllm.com/vllm-benchmarks; prefill not modelled)",
    ),
    "llm_tokens_per_request": (64, "assumption: one short synthetic query or JSON verdict"),
    "llm_requests": (5 * MSMARCO_QUERIES, "assumption: an LLM judge over 5 mined negatives per query"),
    "storage_gb_s": (1.0, "assumption: shared-storage read per node, for the 13.6 GB corpus matrix"),
}


class TimedSearch(SearchWorker):
    """``SearchWorker`` that also returns its own seconds and OpenMP threads (the per-shard rate)."""

    def __call__(self, item):
        import faiss

        t0 = time.perf_counter()
        out = super().__call__(item)
        return out, time.perf_counter() - t0, faiss.omp_get_max_threads()


def ray_engine(**overrides):
    from synth.engine.config import RayEngineConfig
    from synth.engine.ray_engine import RayEngine

    engine = RayEngine(RayEngineConfig(**overrides))
    engine.ray()  # the cluster is running: this only connects (its ray.init is timed once, in main)
    return engine


# --- (a) mining ---------------------------------------------------------------------------------------


def mining_workload(n_docs: int, n_queries: int):
    from synth.mine import build_pairs

    data, corpus, queries = C.random_workload(n_docs, n_queries)
    path = C.CACHE_DIR / "bench_ray" / f"corpus-{n_docs}x{corpus.shape[1]}-seed0.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, corpus)
    del corpus
    return data, build_pairs(data), np.load(path, mmap_mode="r"), queries


def run_mine(wl, cfg, block: int, engine_kw: dict | None):
    """One timed mining run; ``engine_kw`` None: local. Returns (wall, mined, stats, engine report)."""
    from synth.index import Searcher
    from synth.mine import mine

    data, pairs, corpus, queries = wl
    t0 = time.perf_counter()
    engine = ray_engine(**engine_kw) if engine_kw is not None else None
    try:
        searcher = Searcher(corpus, "Flat", "cosine", "cpu", 32, 128, 262_144, 0, 2**34, engine=engine)
        mined, stats = mine(data, pairs, corpus, queries, searcher, cfg, block, 0)
        wall = time.perf_counter() - t0
        report = engine.report() if engine else None
    finally:
        if engine:
            engine.close()
    return wall, mined, stats, report


def mined_diff(a, b) -> tuple[int, float]:
    """(pairs whose negative rows differ, max |score difference|) between two ``Mined``; (0, 0.0): identical."""
    rows = int((a.negative_rows != b.negative_rows).any(axis=1).sum())
    both = np.isfinite(a.negative_scores) & np.isfinite(b.negative_scores)
    nan_same = np.array_equal(np.isnan(a.negative_scores), np.isnan(b.negative_scores))
    diff = float(np.abs(a.negative_scores[both] - b.negative_scores[both]).max(initial=0.0))
    diff = max(diff, float(np.abs(a.positive_scores - b.positive_scores).max(initial=0.0)))
    return rows, diff if nan_same else float("inf")


def identity(rows: int, diff: float, pairs: int) -> str:
    if rows == 0 and diff == 0.0:
        return "yes (rows and scores)"
    return f"NO: rows differ in {rows}/{pairs} pairs, scores max abs diff {diff:.2g}"


# --- (a) embedding ------------------------------------------------------------------------------------


def scifact_texts() -> list[str]:
    from synth.recipe import load_recipe
    from synth.sources import load_source

    return list(load_source(load_recipe(C.ROOT / "recipes" / "resa2.yaml").source).corpus.texts)


def run_embed(texts, chunk_rows: int, engine_kw: dict | None):
    """Embed with a cold cache (a new folder, a new encoder); returns (wall, array copy, report)."""
    from synth.embed import BUNDLED_MODEL, Encoder, embed_texts

    folder = Path(tempfile.mkdtemp(prefix="bench-ray-embed-", dir=C.CACHE_DIR))
    t0 = time.perf_counter()
    engine = ray_engine(**engine_kw) if engine_kw is not None else None
    try:
        encoder = Encoder(BUNDLED_MODEL, 256, 64, True, "cpu", engine=engine)
        out = np.array(embed_texts(encoder, texts, "", folder, chunk_rows, "corpus"))
        wall = time.perf_counter() - t0
        report = engine.report() if engine else None
    finally:
        if engine:
            engine.close()
        shutil.rmtree(folder, ignore_errors=True)
    return wall, out, report


# --- (c) per-shard rates ------------------------------------------------------------------------------


def search_rate(corpus, queries, k: int, block: int, blocks: int) -> dict:
    engine = ray_engine()
    try:
        starts = range(0, min(len(queries), block * blocks), block)
        items = [(s, np.ascontiguousarray(queries[s : s + block]), k) for s in starts]
        out = list(engine.map_actors(TimedSearch, {"matrix_path": corpus.filename}, items, label="search-rate"))
    finally:
        engine.close()
    rates = [len(it[1]) / sec for it, (_, sec, _) in zip(items, out)]
    return {"rate": statistics.median(rates), "threads": out[0][2], "n": len(items), "rows": corpus.shape[0]}


class TimedLLM(LLMShardWorker):
    """``LLMShardWorker`` that also returns the seconds its shard took in the actor."""

    def __call__(self, shard):
        t0 = time.perf_counter()
        out = super().__call__(shard)
        return sum(1 for _, data, _ in out if data.get("error") is None), len(out), time.perf_counter() - t0


def llm_rates(n: int, delay: float, concurrency: int) -> list[dict]:
    """Requests/s through ``RemoteBackend`` (synth's async client in the workers), end to end on the local and
    the Ray engine, and per shard inside the Ray actors (``TimedLLM`` over the shards the backend cuts)."""
    from synth.engine import LocalEngine
    from synth.engine.llm import RemoteBackend
    from synth.llm.base import ChatRequest, request_key
    from synth.llm.config import OpenAIConfig

    proc, url = start_server(delay)
    results = []
    try:
        cfg = OpenAIConfig(base_url=url, model="fake", api_key_env=None, concurrency=concurrency, probe_schema=False)
        for name in ("local", "ray", "ray per shard"):
            reqs = [
                ChatRequest.make([("system", "Write a query."), ("user", f"{name} passage {i}")], {"max_tokens": 32})
                for i in range(n)
            ]
            storage = tempfile.mkdtemp(prefix="bench-ray-llm-", dir=C.CACHE_DIR)
            t0 = time.perf_counter()
            engine = LocalEngine() if name == "local" else ray_engine()
            try:
                backend = RemoteBackend(cfg, engine, storage)
                if name == "ray per shard":
                    keyed = sorted((request_key(backend.identity(), r), i) for i, r in enumerate(reqs))
                    init = {"config": backend.worker_config(), "folder": str(backend.store.folder)}
                    out = list(engine.map_actors(TimedLLM, init, backend.shards(keyed, reqs), label="llm-rate"))
                    ok, rate = sum(o[0] for o in out), statistics.median(o[1] / o[2] for o in out)
                else:
                    got = []
                    backend.generate(reqs, lambda i, r, got=got: got.append(r.ok))
                    ok, rate = sum(got), None
                wall = time.perf_counter() - t0
            finally:
                engine.close()
                shutil.rmtree(storage, ignore_errors=True)
            actors = 1 if name == "local" else engine.cfg.actors
            per_actor = -(-concurrency // actors)
            rate = rate if rate is not None else n / wall / actors
            results.append(
                {
                    "engine": name,
                    "actors": actors,
                    "in_flight": per_actor,
                    "ok": ok,
                    "rate": rate,
                    "ideal": per_actor / delay,
                }
            )
    finally:
        proc.kill()
    return results


# --- (c) the projection -------------------------------------------------------------------------------


def projection(rates: dict, nodes: list[int]) -> tuple[list[str], list[list]]:
    p = {k: v for k, (v, _) in PARAMS.items()}
    g = p["gpus_per_node"]
    flop_per_query = 2 * MSMARCO_DOCS * DIM
    cpu_flops = rates["search"]["rate"] * 2 * rates["search"]["rows"] * DIM  # measured, per actor
    llm_gpu_rps = p["llm_gpu_tokens_s"] / p["llm_tokens_per_request"]
    driver = rates["driver_s_per_pair"] * MSMARCO_QUERIES  # sampling etc. on the driver: does not scale out
    fixed = rates["ray_start"] + rates["stage_overhead"]
    rows = []
    for n in nodes:
        gpus = g * n
        embed = (MSMARCO_DOCS + MSMARCO_QUERIES) / (p["embed_gpu_rows_s"] * gpus)
        load = MSMARCO_DOCS * DIM * 4 / 1e9 / p["storage_gb_s"]
        search = MSMARCO_QUERIES * flop_per_query / (p["search_gpu_flops"] * gpus) + load
        llm = p["llm_requests"] / (llm_gpu_rps * gpus)  # GPU-bound: the client's share is in the rates table
        rows.append(
            [f"{n} node(s) x {g} GPUs", embed, search, driver, llm, fixed, embed + search + driver + llm + fixed]
        )
    # the same work at this machine's measured CPU rates, for scale (2 actors)
    cpu_embed = (MSMARCO_DOCS + MSMARCO_QUERIES) / (2 * rates["embed"]["rate"]) if "embed" in rates else None
    cpu_search = MSMARCO_QUERIES * flop_per_query / (2 * cpu_flops)
    rows.append(["this machine, measured CPU rates, 2 actors", cpu_embed, cpu_search, driver, None, fixed, None])
    headers = ["N (projection)", "embed s", "exact search s", "driver sampling s", "LLM judge s", "fixed s", "total s"]
    return headers, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=2_048)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1024], help="index.query_block settings (1024: default)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument(
        "--chunk-rows", type=int, nargs="*", default=[4096, 300], help="embed.chunk_rows settings (none: skip)"
    )
    ap.add_argument("--llm-requests", type=int, default=1024)
    ap.add_argument("--llm-delay", type=float, default=0.2)
    ap.add_argument("--llm-concurrency", type=int, default=64)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    from synth.engine.config import RayEngineConfig

    t_script = time.perf_counter()
    load0 = os.getloadavg()
    defaults = RayEngineConfig()
    cfg = C.mine_cfg(RESA2, n=5)
    wl = mining_workload(args.docs, args.queries)
    texts = scifact_texts()
    cluster = ray_engine()  # starts the loopback cluster (the only ray.init of the run)
    ray_start = cluster.start_seconds
    rows, notes, rates = [], [], {"ray_start": ray_start}
    try:
        # (a) mining: one warm-up each (the first local run is the reference), then alternate who goes first
        _, ref, _, _ = run_mine(wl, cfg, args.blocks[0], None)
        run_mine(wl, cfg, args.blocks[0], {})
        n_pairs = len(wl[1])
        for block in args.blocks:
            loc, ray, workers, drv, worst = [], [], set(), [], (0, 0.0)
            for i in range(args.repeat):
                for who in ("local", "ray") if i % 2 == 0 else ("ray", "local"):
                    wall, mined, stats, rep = run_mine(wl, cfg, block, {} if who == "ray" else None)
                    (ray if who == "ray" else loc).append(wall)
                    d = mined_diff(ref, mined)
                    worst = (max(worst[0], d[0]), max(worst[1], d[1]))
                    if who == "ray":
                        workers.add(rep["workers"])
                    else:
                        drv.append((wall - stats.search_seconds) / n_pairs)
            lm, rm = statistics.median(loc), statistics.median(ray)
            blocks = -(-args.queries // block)
            rows.append(
                [
                    f"mining {args.docs:,} x {DIM}, {args.queries:,} queries, exact + resa2 "
                    f"(query_block {block}: {blocks} blocks)",
                    lm,
                    rm,
                    rm / lm,
                    "yes" if rm / lm <= 1.3 else "NO",
                    rm - lm,
                    identity(*worst, n_pairs),
                    "/".join(map(str, sorted(workers))),
                ]
            )
            notes.append(f"{rows[-1][0]}: local {[round(t, 2) for t in loc]} s, ray {[round(t, 2) for t in ray]} s")
            if block == args.blocks[0]:
                rates["driver_s_per_pair"] = statistics.median(drv)
                rates["stage_overhead"] = max(0.0, rm - lm)
            print(rows[-1], flush=True)
        # (a) embedding, cold cache each time
        for chunk_rows in args.chunk_rows:
            loc, ray, same, workers = [], [], True, set()
            for i in range(max(1, args.repeat - 1)):
                for who in ("local", "ray") if i % 2 == 0 else ("ray", "local"):
                    wall, arr, rep = run_embed(texts, chunk_rows, {} if who == "ray" else None)
                    (ray if who == "ray" else loc).append(wall)
                    if who == "local":
                        ref_arr = arr
                    else:
                        workers.add(rep["workers"])
                        ray_arr = arr
                same &= np.array_equal(ref_arr, ray_arr)  # float32 bytes
            chunks = -(-len(texts) // chunk_rows)
            lm, rm = statistics.median(loc), statistics.median(ray)
            rows.append(
                [
                    f"embedding scifact-mini {len(texts):,} abstracts (chunk_rows {chunk_rows}: {chunks} chunk(s))",
                    lm,
                    rm,
                    rm / lm,
                    "yes" if rm / lm <= 1.3 else "NO",
                    rm - lm,
                    "yes" if same else "NO",
                    "/".join(map(str, sorted(workers))),
                ]
            )
            notes.append(f"{rows[-1][0]}: local {[round(t, 2) for t in loc]} s, ray {[round(t, 2) for t in ray]} s")
            print(rows[-1], flush=True)
            if "embed" not in rates:  # per actor: rows / the Ray run's wall / the actors that had a chunk
                busy = min(defaults.actors, chunks)
                rates["embed"] = {"rate": len(texts) / rm / busy, "chunk_rows": chunk_rows, "actors": busy}
        # (c) per-shard rates in Ray actors
        rates["search"] = search_rate(wl[2], wl[3], RESA2["k1"], args.blocks[0], 4)
        llm = llm_rates(args.llm_requests, args.llm_delay, args.llm_concurrency)
        rates["llm"] = llm[-1]
    finally:
        cluster.close()
    wall_script = time.perf_counter() - t_script

    headers = [
        "workload",
        "local s (median)",
        "ray s (median)",
        "ratio ray/local",
        "<= 1.3",
        "ray - local s",
        "identical output",
        "ray workers",
    ]
    table_a = C.md_table(headers, rows)
    s, e = rates["search"], rates.get("embed", {"rate": None, "chunk_rows": "-", "actors": "-"})
    rate_rows = [
        [
            f"embedding: {len(texts):,} scifact abstracts (<= 256 tokens) / the Ray run's wall (chunk_rows "
            f"{e['chunk_rows']}, {e['actors']} busy actor(s), actor and model start-up included)",
            e["rate"],
            "rows/s per actor",
            "1 (OMP_NUM_THREADS=1 from Ray)",
        ],
        [
            f"exact search (SearchWorker, {args.blocks[0]}-query blocks, k {RESA2['k1']}, {s['rows']:,} x {DIM})",
            s["rate"],
            "queries/s",
            s["threads"],
        ],
        [
            "exact search, implied FLOP rate (2 x rows x dim per query)",
            s["rate"] * 2 * s["rows"] * DIM / 1e9,
            "GFLOP/s",
            s["threads"],
        ],
    ]
    for r in llm:
        rate_rows.append(
            [
                f"LLM requests via synth's client, fake server {args.llm_delay} s latency, {r['in_flight']} in flight "
                f"per actor, {args.llm_requests} requests ({r['ok']} ok): {r['engine']} ({r['actors']} actor(s))",
                r["rate"],
                f"requests/s per actor = {r['rate'] / r['ideal']:.2f} of in-flight / latency",
                "-",
            ]
        )
    table_r = C.md_table(["per-shard rate (measured, one actor)", "rate", "unit", "threads"], rate_rows)
    ph, prow = projection(rates, args.nodes)
    table_p = C.md_table(ph, prow)
    table_params = C.md_table(
        ["parameter (not measured)", "value", "source"], [[k, v, src] for k, (v, src) in PARAMS.items()]
    )
    table = "\n\n".join(
        [
            f"Cluster start-up (`ray.init`, loopback, not in any ratio): {ray_start:.1f} s",
            table_a,
            "Per-shard rates measured in Ray actors:",
            table_r,
            "**Projection** for MS MARCO (8.8M passages, 503k queries, 384-d) on N GPU nodes: not a measurement.",
            table_p,
            table_params,
        ]
    )
    print(table)
    load1 = os.getloadavg()
    notes = [
        f"Engine defaults: actors {defaults.actors}, actor_cpus {defaults.actor_cpus}, num_cpus (local cluster) "
        f"4 x {os.cpu_count()} = {4 * (os.cpu_count() or 1)}, corpus_shards {defaults.corpus_shards}, "
        f"llm_shard_rows {defaults.llm_shard_rows}. Ray actors with 0.5 CPU run 1 OpenMP/torch thread each "
        "(threads column); the local engine uses the process's threads.",
        "Every ray run opens a RayEngine on the running cluster, so its time includes the actors' start-up "
        "(a worker process, imports, the model or the memory-mapped corpus), the object-store transfers and "
        "the driver's merge; the cluster's ray.init is not counted. 'identical output': every run's negatives "
        "(rows, scores, positive scores) or embedding array equals the local reference, byte for byte.",
        f"Mining: random unit vectors (seed 0), queries = their positive + 0.5 x noise; resa2 k1 1000, k1' 500, "
        f"k2 75, kernel 0.25, n 5; exact Flat search (faiss.knn over the memmap); {args.repeat} runs each after "
        "one warm-up each, alternating which engine goes first. Embedding: bundled all-MiniLM-L6-v2, "
        "max_seq_length 256, batch 64, CPU, a new cache folder and encoder per run.",
        "Projection: embed = (docs + queries) / (embed_gpu_rows_s x GPUs); exact search = queries x 2 x docs x 384 "
        "/ (search_gpu_flops x GPUs) + the corpus read per node; driver sampling = the measured driver seconds per "
        "pair of the local mining run (sampling, masking, backfill; it runs on the driver and does not scale "
        "with N) x 503k pairs; LLM = requests / (llm_gpu_tokens_s / llm_tokens_per_request x GPUs), GPU-bound: "
        "synth's client keeps up when each actor has rate x latency requests in flight (the rates table gives the "
        "share of in-flight / latency it reached; on GPU nodes the vLLM processor path replaces HTTP); fixed = the "
        "measured cluster start + the measured ray-local mining difference. Assumes "
        "engine.actors = the GPU count (the default 2 would use 2 GPUs) and even shards; no stragglers, "
        "retries or node start-up.",
        f"Shared machine: other helpers' jobs (tests, Ray clusters) ran on the same {os.cpu_count()} cores; load "
        f"average at start {load0[0]:.2f}, at end {load1[0]:.2f}. Script wall {wall_script:.0f} s.",
        *notes,
    ]
    if any(r[3] < 1 for r in rows):
        notes.append(
            "A ratio below 1 is what this loaded machine measured, not a Ray speed-up to expect: under contention "
            "the local engine's one process with 2 OpenMP/torch threads appears to lose more time than Ray's "
            "single-threaded actor processes; on an idle machine expect a ratio of 1 or more."
        )
    if any(str(r[6]).startswith("NO") for r in rows):
        notes.append(
            "Not identical: the actors (0.5 CPU) run faiss.knn with 1 OpenMP thread, the driver with "
            f"{os.cpu_count()}; faiss's BLAS product rounds differently with 1 and 2 threads for some shapes "
            "(checked in one process with faiss.omp_set_num_threads), so exact scores differ in the last bits "
            "and near-equal candidates can swap. The local engine run at 1 thread equals the Ray run."
        )
    if not args.no_append:
        C.write_result("Ray engine overhead on one machine, per-shard rates, MS MARCO projection", table, notes)


if __name__ == "__main__":
    main()
