"""The Cranfield false-negative table (MEASURING.md protocol), with sentence-transformers as anchor rows.

Every row: bundled all-MiniLM-L6-v2, cosine, exact search, n = 5, probe seed 0, half of each
multi-positive query's positives hidden. synth rows go through ``synth.evaluate.fn_probe.run_fn_probe``;
the sentence-transformers rows run ``mine_hard_negatives`` on the very same embeddings (its cache is
pre-populated), given only the visible positives (one dataset row per visible positive, so it
excludes all of them), and are counted by the same ``probe_metrics``.

    python benchmarks/fn_probe_cranfield.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# MEASURING.md's anchor figures: method -> (FN rate, mean rank, queries short of 5).
ANCHOR = {
    "topk": (0.194, 3.6, 0),
    "st-top": (0.167, 3.2, 0),
    "st-top-relmargin-0.05": (0.073, 25.7, 57),
    "simans": (0.023, 53.7, 0),
    "resa2": (0.058, 70.8, 0),
    "random": (0.000, 689.7, 0),
}

# (row name, anchor key, sampler, filters)
SYNTH_ROWS = [
    ("topk range_max 100", "topk", {"kind": "topk", "range_max": 100}, []),
    (
        "topk range_max 100 + perc 0.95, no backfill",
        None,
        {"kind": "topk", "range_max": 100},
        [{"kind": "perc", "p": 0.95}],
    ),
    (
        "topk range_max 100 + perc 0.95, backfill",
        None,
        {"kind": "topk", "range_max": 100},
        [{"kind": "perc", "p": 0.95}],
    ),
    ("simans a=0.5 b=0 depth 100", "simans", {"kind": "simans", "a": 0.5, "b": 0.0, "depth": 100}, []),
    (
        "resa2 k1=200 k1'=100 k2=20 kernel 0.25",
        "resa2",
        {"kind": "resa2", "k1": 200, "k1_prime": 100, "k2": 20, "kernel": 0.25},
        [],
    ),
    ("random", "random", {"kind": "random"}, []),
]
SCALED = [10.0, 20.0]  # score_scale rows for simans / resa2 when their configs have that field
REPO = Path(__file__).resolve().parents[1]
# Rows that run a shipped recipe unchanged on Cranfield (its source set by --set, as a user would):
# (row name, recipe, extra --set overrides). The probe runs each recipe's own stages: mining with backfill,
# its judge cascade, policy and mix (LLM generation stages are skipped: their texts cannot be hidden positives).
JUDGED_ROWS = [
    ("clean_hard_negatives: topk + fn_risk (target 0.02)", "recipes/clean_hard_negatives.yaml", []),
    (
        "resa2_plus_synthetic (mined half): resa2 k1=50 k1'=30 k2=10 + fn_risk, mix 3+1",
        "recipes/resa2_plus_synthetic.yaml",
        [],
    ),
    ("clean_hard_negatives, target_fn_rate 0.01", "recipes/clean_hard_negatives.yaml", ["@target=0.01"]),
    ("clean_hard_negatives, target_fn_rate 0.05", "recipes/clean_hard_negatives.yaml", ["@target=0.05"]),
    (
        "topk + cross-encoder trained by the run (model: trained, 256 pairs, 1 epoch)",
        "recipes/clean_hard_negatives.yaml",
        ["@cascade=ce"],
    ),
]
CE_CASCADE = """name: ce_trained
stages:
  - {kind: cross_encoder, name: ce, model: trained, max_length: 128, negative_below: 0.0, false_negative_at_or_above: 0.0}
"""


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
    one_positive: bool = False,
    shared_text_ok: bool = False,
    **st_kwargs,
) -> dict:
    """sentence-transformers ``mine_hard_negatives`` under the probe protocol.

    One dataset row per (probed query, visible positive): ST groups rows by query text and excludes
    every positive it was given for that query, i.e. exactly the visible ones. ``one_positive``
    gives it only the first visible positive of each query instead (the other visible positives
    may then come back as negatives: counted as ``labelled_as_negative``). Negatives come back
    as texts (``output_format="triplet"`` keeps partially filled rows) and are mapped back to corpus
    rows; they are counted per pair, like synth's, by ``probe_metrics``. ``shared_text_ok``: accept
    probed queries with the same text (ST merges them and excludes the positives of both, as synth's
    miner does for queries of identical text); otherwise that is an error."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    from synth.evaluate.fn_probe import full_ranks, probe_data, probe_metrics
    from synth.mine import build_pairs

    shown = {q: dict(list(v.items())[:1]) for q, v in visible.items()} if one_positive else visible
    pdata, qrows = probe_data(data, shown)
    pairs = build_pairs(pdata)
    p_query_emb = np.asarray(query_emb[qrows], np.float32)
    qtext = [pdata.queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [data.corpus.texts[r] for r in pairs.positive_rows.tolist()]
    if len(set(pdata.queries.texts)) != len(pdata.queries) and not shared_text_ok:
        raise ValueError("probed queries share a text: sentence-transformers would merge them")
    if len(set(data.corpus.texts)) != len(data.corpus):
        raise ValueError("corpus texts are not unique: negatives cannot be mapped back to ids")
    C.st_prepopulate(model, qtext, p_query_emb[pairs.query_rows], data.corpus.texts, corpus_emb, ptext, cache_folder)
    ds = Dataset.from_dict({"query": qtext, "positive": ptext})
    out = mine_hard_negatives(
        ds,
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
    row_of_text = {t: r for r, t in enumerate(data.corpus.texts)}
    slot: dict[tuple[str, str], list[int]] = {}
    for a, p, neg in zip(out["query"], out["positive"], out["negative"]):
        slot.setdefault((a, p), []).append(row_of_text[neg])
    neg_rows = np.full((len(pairs), n), -1, np.int64)
    for i, key in enumerate(zip(qtext, ptext)):
        got = slot.get(key, [])[:n]
        neg_rows[i, : len(got)] = got
    ranks = full_ranks(p_query_emb, corpus_emb, pairs.query_rows, neg_rows)
    result = probe_metrics(pdata, pairs.query_ids, neg_rows, hidden, ranks, n, labelled=visible)
    result.update(
        method="sentence-transformers mine_hard_negatives",
        one_positive=one_positive,
        st_args={
            "range_max": range_max,
            "num_negatives": n,
            "sampling_strategy": "top",
            "use_faiss": True,
            **st_kwargs,
        },
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/synth-bench-out/fn_probe_cranfield", help="fn_probe.json per row")
    args = ap.parse_args()
    C.require_data("cranfield")

    from synth.evaluate.fn_probe import hide_positives, load_and_embed, run_fn_probe
    from synth.samplers import REGISTRY, sampler_kinds

    base = C.load_bench_recipe("cranfield_topk.yaml")
    loaded = load_and_embed(base)
    data, corpus_emb, query_emb = loaded

    rows, skipped, results = [], [], {}
    todo = list(SYNTH_ROWS)
    for name, _, spec, _ in SYNTH_ROWS:
        kind = spec["kind"]
        if kind in ("simans", "resa2") and kind in sampler_kinds() and "score_scale" in REGISTRY[kind][0].model_fields:
            todo += [(f"{name}, score_scale {c:g}", None, {**spec, "score_scale": c}, []) for c in SCALED]
    for i, (name, anchor_key, sampler, filters) in enumerate(todo):
        if sampler["kind"] not in sampler_kinds():
            skipped.append(f"{name}: sampler {sampler['kind']!r} is not registered in synth.samplers")
            continue
        recipe = C.load_bench_recipe(
            "cranfield_topk.yaml",
            [f"mine.sampler={json.dumps(sampler)}", f"mine.filters={json.dumps(filters)}"]
            + (["mine.backfill_depth=0"] if "no backfill" in name else []),
        )
        res = run_fn_probe(recipe, Path(args.out) / f"row{i:02d}-{sampler['kind']}", 0.5, 0, loaded=loaded)
        results[name] = res
        rows.append(_row(name, res, ANCHOR.get(anchor_key)))
        print(rows[-1], flush=True)

    # A cold judge store, so that 'judge s' is the judges' training + scoring, never a stored rerun.
    shutil.rmtree(C.CACHE_DIR / "judge", ignore_errors=True)
    for i, (name, recipe_file, extra) in enumerate(JUDGED_ROWS):
        res = run_fn_probe(
            judged_recipe(recipe_file, extra, Path(args.out)), Path(args.out) / f"judged{i:02d}", 0.5, 0, loaded=loaded
        )
        results[name] = res
        rows.append(_row(name, res, None))
        print(rows[-1], flush=True)

    model = C.bundled_model()
    visible, hidden = hide_positives(data, 0.5, 0)
    st_cache = C.CACHE_DIR / "st-cache" / "cranfield"
    for name, key, kw in [
        ("sentence-transformers top, no margin", "st-top", {}),
        ("sentence-transformers top, relative_margin 0.05", "st-top-relmargin-0.05", {"relative_margin": 0.05}),
        ("sentence-transformers top, no margin, 1 visible positive/query", "st-top", {"one_positive": True}),
        (
            "sentence-transformers top, relative_margin 0.05, 1 visible positive/query",
            "st-top-relmargin-0.05",
            {"relative_margin": 0.05, "one_positive": True},
        ),
    ]:
        res = anchor_st_probe(data, corpus_emb, query_emb, visible, hidden, model, st_cache, **kw)
        results[name] = res
        rows.append(_row(name, res, ANCHOR.get(key)))
        print(rows[-1], flush=True)

    probed = next(iter(results.values()))["probed_queries"]
    headers = [
        "method",
        "FN rate",
        "mean rank",
        "median rank",
        "queries short of n",
        "visible pos. as neg.",
        "FN rate (per pair)",
        "mean rank (per pair)",
        "anchor FN",
        "anchor mean rank",
        "anchor short",
        "judge AUC (held-out est.)",
        "flag precision / recall",
        "judge s (fit + score)",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = [
        f"Cranfield test: {len(data.corpus)} docs (2 empty ones dropped by the loader), {probed} probed queries, "
        f"{sum(len(v) for v in hidden.values())} hidden / {sum(len(v) for v in visible.values())} visible positives; "
        "bundled all-MiniLM-L6-v2, cosine, exact search, n = 5, probe seed 0, recipe seed 0.",
        "FN rate / mean / median rank count each probed query's distinct mined negatives (the union over its pairs, "
        "pair = (probed query, visible positive)), as MEASURING.md does; the per-pair columns count every mined "
        "(pair, negative) slot, i.e. the published rows. Hidden per query: floor(m/2), at least 1. Rank = 1-based rank in the "
        "query's dense ranking of the whole corpus, positives included. 'short' = probed queries with a pair that "
        "got fewer than 5 negatives.",
        "Anchor columns: MEASURING.md's figures for the same method ('-' where MEASURING.md has no such row).",
        "sentence-transformers rows: `mine_hard_negatives(range_max=100, num_negatives=5, sampling_strategy='top', "
        "use_faiss=True)` on the same embeddings (pre-populated cache), one dataset row per visible positive, so it "
        "excludes all visible positives (it groups rows by query): it then equals synth's topk. The '1 visible "
        "positive/query' rows give it only the first visible positive per query; they reproduce MEASURING.md's "
        "sentence-transformers anchor figures, which therefore appear to come from that setup (the other visible "
        "positives then come back as negatives: column 'visible pos. as neg.', distinct (query, doc) count).",
        "Judged rows: the shipped recipe named, run unchanged on Cranfield (`--set source.path=... source.split=test`; "
        "'target_fn_rate x' rows set that field of judges/fn_risk.yaml, to show the trade-off, not to tune it); n is "
        "the recipe's negatives per pair (5 for clean_hard_negatives, 4 = mix 3 mined + 1 synthetic slot refilled by a "
        "mined one for resa2_plus_synthetic). 'judge AUC': ROC AUC of each judge stage's score over the probed "
        "candidates it saw (its pool and backfill), hidden positives against the rest; in brackets the risk "
        "model's own cross-fitted estimate on its nested hiding. 'flag precision / recall': of the stage's "
        "false_negative verdicts, against the hidden positives it saw (base rate = their share of its pool). "
        "'judge s': the select stage (the judge's training + scoring, backfill and mix) on the probe's data, from "
        f"a cold judge store ({C.CACHE_DIR / 'judge'} is emptied first; embeddings come from the cache).",
        f"Per-row JSON: {args.out}/<row>/fn_probe.json.",
    ] + [f"not run: {s}" for s in skipped]
    C.append_result("Cranfield false-negative probe", table, notes)


def judged_recipe(recipe_file: str, extra: list[str], out: Path):
    """A shipped recipe pointed at Cranfield test; '@target=x' / '@cascade=ce' swap its judge settings."""
    from synth.judge.config import load_cascade
    from synth.recipe import load_recipe

    sets = [
        f"source.path={C.SHARED_DATA / 'cranfield'}",
        "source.split=test",
        "embed.max_seq_length=256",
        "index.factory=Flat",
    ]
    for item in extra:
        key, value = item[1:].split("=", 1)
        out.mkdir(parents=True, exist_ok=True)
        cascade = out / f"cascade-{key}-{value}.yaml"
        if key == "target":
            doc = load_cascade(REPO / "judges" / "fn_risk.yaml").model_dump(mode="json")
            doc["stages"][0]["target_fn_rate"] = float(value)
            cascade.write_text(json.dumps(doc))
        else:
            cascade.write_text(CE_CASCADE)
        sets.append(f"judge.cascade={cascade}")
    return load_recipe(REPO / recipe_file, sets)


def _row(name: str, res: dict, anchor) -> list:
    a = anchor or (None, None, None)
    judges = (res.get("judges") or {}).get("stages") or []

    def auc(j: dict) -> str:
        est = ((j.get("model_estimate") or {}).get("heldout") or {}).get("auc")
        own = "-" if j.get("auc") is None else f"{j['auc']:.3f}"
        return f"{j['stage']} {own}" + (f" ({est:.3f})" if est is not None else "")

    def pr(j: dict) -> str:
        f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        return f"{j['stage']} {f(j['precision'])} / {f(j['recall'])} (base {f(j['base_rate'])})"

    select_s = (res.get("stages") or {}).get("select", {}).get("seconds") if judges else None
    return [
        name,
        res["fn_rate"],
        res["mean_rank"],
        res["median_rank"],
        res["queries_short"],
        res["labelled_as_negative"],
        res["per_pair"]["fn_rate"],
        res["per_pair"]["mean_rank"],
        a[0],
        a[1],
        a[2],
        "; ".join(auc(j) for j in judges) or "-",
        "; ".join(pr(j) for j in judges) or "-",
        "-" if select_s is None else f"{select_s:.1f}",
    ]


if __name__ == "__main__":
    main()
