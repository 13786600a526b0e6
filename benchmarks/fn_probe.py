"""False negatives and hardness on every shared multi-positive collection (MEASURING.md's probe), one
table per collection, with plain top-k and sentence-transformers beside the shipped recipes.

Per collection (Cranfield test, NPL test, SciFact train) and probe seed (0, 1, 2: which half of each
query's positives is hidden), four rows, every one counted by the same ``probe_metrics`` against the
same two references of its own probe (``synth.evaluate.probe_metrics.hardness_limit``):
- top-k: the 5 best non-positives of the dense ranking (range_max 100), no judge;
- sentence-transformers ``mine_hard_negatives(relative_margin=0.05, sampling_strategy="top",
  range_max=100)`` on the same embeddings, given every visible positive;
- ``recipes/clean_hard_negatives.yaml`` and ``recipes/resa2_plus_synthetic.yaml`` (its mined half: the
  probe runs no LLM stage and refills the synthetic slot with a mined negative, n = 4), each run
  unchanged with ``--set source.path=... source.split=...`` as a user would.

Columns: FN rate; FN as a share of plain top-n's (the same n); mean rank of the negatives in the
query's full dense ranking; the hardness limit (mean rank of the first n non-positives, an oracle that
knows every labelled positive); the mean rank as a multiple of it; probed queries short of n; the
judge's AUC on the hidden positives it saw; the select stage's seconds (judge fit + scoring + backfill)
from a cold judge store. Means over the seeds; [min, max] over the seeds for the two ratios.

    python benchmarks/fn_probe.py [--seeds 0 1 2] [--collections cranfield npl scifact]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"cranfield": "test", "npl": "test", "scifact": "train"}
ROWS = [
    ("top-k (range_max 100)", "topk"),
    ("sentence-transformers mine_hard_negatives, relative_margin 0.05", "st"),
    ("clean_hard_negatives (topk + fn_risk + backfill)", "recipes/clean_hard_negatives.yaml"),
    ("resa2_plus_synthetic, mined half (resa2 + fn_risk, mix 3+1)", "recipes/resa2_plus_synthetic.yaml"),
]


def anchor_st_probe(
    data,
    corpus_emb,
    query_emb,
    visible,
    hidden,
    model,
    cache_folder: Path,
    n: int = 5,
    range_max: int = 100,
    shared_text_ok: bool = False,
    **st_kwargs,
):
    """sentence-transformers ``mine_hard_negatives`` under the probe protocol: one dataset row per (probed
    query, visible positive), so it excludes every visible positive (it groups rows by query text).
    Negatives come back as texts and are mapped to corpus rows (a text that several documents share maps
    to the first of them that is not a visible positive of the query). ``shared_text_ok``: accept probed
    queries with the same text (ST merges them and excludes the positives of both, as synth's miner does);
    otherwise that is an error."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from synth.evaluate.fn_probe import probe_data
    from synth.evaluate.probe_metrics import full_ranks, probe_metrics
    from synth.mine import build_pairs

    pdata, qrows = probe_data(data, visible)
    if len(set(pdata.queries.texts)) != len(pdata.queries) and not shared_text_ok:
        raise ValueError("probed queries share a text: sentence-transformers would merge them")
    pairs = build_pairs(pdata)
    p_query_emb = np.asarray(query_emb[qrows], np.float32)
    qtext = [pdata.queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [data.corpus.texts[r] for r in pairs.positive_rows.tolist()]
    C.st_prepopulate(model, qtext, p_query_emb[pairs.query_rows], data.corpus.texts, corpus_emb, ptext, cache_folder)
    out = mine_hard_negatives(
        Dataset.from_dict({"query": qtext, "positive": ptext}),
        model,
        corpus=list(data.corpus.texts),
        range_max=range_max,
        num_negatives=n,
        sampling_strategy="top",
        output_format="triplet",
        use_faiss=True,
        verbose=False,
        cache_folder=str(cache_folder),
        **st_kwargs,
    )
    rows_of_text: dict[str, list[int]] = {}
    for r, t in enumerate(data.corpus.texts):
        rows_of_text.setdefault(t, []).append(r)
    shown = {q: {data.corpus.row_of[d] for d in v} for q, v in visible.items()}
    query_of_text = {pdata.queries.texts[r]: pdata.queries.ids[r] for r in range(len(pdata.queries))}
    slot: dict[tuple[str, str], list[int]] = {}
    for a, p, neg in zip(out["query"], out["positive"], out["negative"]):
        rows = [r for r in rows_of_text[neg] if r not in shown[query_of_text[a]]] or rows_of_text[neg]
        slot.setdefault((a, p), []).append(rows[0])
    neg_rows = np.full((len(pairs), n), -1, np.int64)
    for i, key in enumerate(zip(qtext, ptext)):
        got = slot.get(key, [])[:n]
        neg_rows[i, : len(got)] = got
    ranks = full_ranks(p_query_emb, corpus_emb, pairs.query_rows, neg_rows)
    return probe_metrics(pdata, pairs.query_ids, neg_rows, hidden, ranks, n, labelled=visible)


def probe_rows(collection: str, seed: int) -> list[dict]:
    """The four rows of one collection and probe seed, each a probe result with its references."""
    from synth.evaluate.fn_probe import hide_positives, load_and_embed, probe_view
    from synth.evaluate.probe_metrics import hardness_limit, relative
    from synth.evaluate.fn_probe import run_fn_probe
    from synth.recipe import load_recipe

    path, split = C.SHARED_DATA / collection, SPLITS[collection]
    sets = [f"source.path={path}", f"source.split={split}"]
    topk = C.load_bench_recipe("cranfield_topk.yaml", sets)
    loaded = load_and_embed(topk)
    data, corpus_emb, query_emb = loaded
    out = []
    for name, what in ROWS:
        if what == "topk":
            res = run_fn_probe(topk, None, 0.5, seed, loaded=loaded)
        elif what == "st":
            visible, hidden = hide_positives(data, 0.5, seed)
            cache = C.CACHE_DIR / "st-cache" / collection
            res = anchor_st_probe(
                data,
                corpus_emb,
                query_emb,
                visible,
                hidden,
                C.bundled_model(),
                cache,
                5,
                shared_text_ok=True,
                relative_margin=0.05,
            )  # shared query texts: ST merges them, as synth's miner does
            limit = hardness_limit(data, probe_view(data, hidden), hidden, query_emb, corpus_emb, 5, True)
            res.update(relative(res, limit))
        else:
            shutil.rmtree(C.CACHE_DIR / "judge", ignore_errors=True)  # 'judge s' is a fit, never a stored rerun
            res = run_fn_probe(load_recipe(REPO / what, sets), None, 0.5, seed)
        res["row"] = name
        out.append(res)
        print(
            f"{collection} seed {seed}: {name}: FN {res['fn_rate']:.3f} = {res['fn_vs_topk']:.2f}x top-{res['n']}, "
            f"rank {res['mean_rank']:.1f} = {res['rank_vs_oracle']:.2f}x limit, short {res['queries_short']}",
            flush=True,
        )
    return out


def table(results: list[list[dict]]) -> tuple[str, dict]:
    """One row per method over the seeds: means, and [min, max] of the two ratios."""
    rows = []
    for i, (name, _) in enumerate(ROWS):
        per_seed = [r[i] for r in results]

        def mean(key):
            vals = [x[key] for x in per_seed if x.get(key) is not None]
            return float(np.mean(vals)) if vals else None

        def spread(key):
            vals = [x[key] for x in per_seed if x.get(key) is not None]
            return f"{np.mean(vals):.2f} [{min(vals):.2f}, {max(vals):.2f}]" if vals else "-"

        judges = [x["judges"]["stages"][0] for x in per_seed if x.get("judges")]
        aucs = [j["auc"] for j in judges if j.get("auc") is not None]
        estimates = [((j.get("model_estimate") or {}).get("estimate") or {}).get("fn_ratio") for j in judges]
        estimates = [e for e in estimates if e is not None]
        modes = sorted({(j.get("model_estimate") or {}).get("mode") for j in judges} - {None})
        select_s = (per_seed[0].get("stages") or {}).get("select", {}).get("seconds") if judges else None
        rows.append(
            [
                name + (f" ({', '.join(modes)})" if modes else ""),
                per_seed[0]["n"],
                mean("fn_rate"),
                spread("fn_vs_topk"),
                f"{np.mean(estimates):.2f}" if estimates else "-",
                mean("mean_rank"),
                mean("oracle_mean_rank"),
                spread("rank_vs_oracle"),
                max(x["queries_short"] for x in per_seed),
                f"{np.mean(aucs):.3f}" if aucs else "-",
                "-" if select_s is None else f"{select_s:.1f}",
            ]
        )
    headers = ["method", "n", "FN", "FN / top-n", "judge's estimate", "mean rank", "oracle rank", "x oracle", "short"]
    headers += ["judge AUC"]
    return C.md_table(headers + ["judge s"], rows), {"probed": results[0][0]["probed_queries"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--collections", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    args = ap.parse_args()
    for collection in args.collections:
        if not (C.SHARED_DATA / collection).exists():
            print(f"skipped {collection}: {C.SHARED_DATA / collection} is absent")
            continue
        results = [probe_rows(collection, seed) for seed in args.seeds]
        text, info = table(results)
        print(text)
        notes = [
            f"{collection} {SPLITS[collection]}: {info['probed']} probed queries (two or more positives; half of "
            f"each one's positives hidden, at least one), probe seeds {', '.join(map(str, args.seeds))}; bundled "
            "all-MiniLM-L6-v2, cosine, exact search; recipe seed 0.",
            "FN / top-n: the row's FN rate over plain top-n's on the same probe (n = the row's negatives per "
            "query); x oracle: its mean rank over the hardness limit (the first n non-positives of each probed "
            "query's ranking). Mean [min, max] over the seeds; 'short' is the most over the seeds.",
            "Acceptance (issue 22): FN / top-n <= 0.2, x oracle <= 5, short 0 for both recipes on Cranfield and "
            "NPL; goal 0.1 and 3. The recipes run unchanged (`--set source.path=... --set source.split=...`).",
            "What the judge can and cannot see: fn_risk learns from labelled positives only. On single-positive "
            "data (SciFact: 91% of train queries) it has nothing to hide and learn from and falls back to the "
            "positive-aware margin guard (NV-Retriever's TopK-PercPos, 0.95 of the best labelled positive); an "
            "unlabelled relevant document that resembles no labelled positive, or ranks above the positive, is "
            "invisible to it and to this probe, which counts hidden labelled positives only.",
            "judge's estimate: the FN / top-n the fn_risk stage estimated for itself on its held-out replay "
            "(mean over the seeds), beside what the probe measured.",
            "judge AUC: the fn_risk stage's ROC AUC on the hidden positives among the candidates it saw; in "
            "brackets after the method: learned or fallback (too little support: one line in the report and the "
            "CLI says why). judge s: the select stage on the probe's data, seed "
            f"{args.seeds[0]}, from a cold judge store.",
        ]
        C.write_result(f"False-negative probe: {collection}", text, notes)


if __name__ == "__main__":
    main()
