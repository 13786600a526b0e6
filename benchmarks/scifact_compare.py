"""SciFact: which training data trains the better retriever? (MEASURING.md, downstream quality)

Each entry's data is mined on SciFact train (qrels/train.tsv); the bundled all-MiniLM-L6-v2 is
fine-tuned on it with the same budget (MultipleNegativesRankingLoss, 1 epoch, batch 32, lr 2e-5,
max_seq_length 256, one negative per row) for every seed, and scored on SciFact test (nDCG@10, MRR@10,
Recall@100; mean ± std over seeds). Entries:
- base: the untrained model (reference row);
- pairs: (query, positive) only, in-batch negatives;
- bm25, topk, simans, resa2: synth recipes benchmarks/recipes/scifact_cmp_*.yaml (triplet, n = 1);
- st-margin: sentence-transformers ``mine_hard_negatives`` (top, relative_margin 0.05, range_max 100,
  one negative) on the very same embeddings, saved as a run folder;
- any recipe given with --extra (resa2 with judges, resa2_plus_synthetic, ...).
Cells are cached under --out: an interrupted run resumes.

    python benchmarks/scifact_compare.py [--seeds 0,1,2] [--only base,pairs,...] [--extra RECIPE ...]
                                         [--max-steps N] [--max-seq-length 256] [--mine-max-seq-length 256]
                                         [--out DIR] [--no-append]

On a 2-core CPU one cell (1 epoch, max_seq_length 256) takes ~23 min (35 s per training step, 6 min to
encode the corpus); --max-seq-length 128 (training and evaluation; mining keeps its own 256) cuts that
to ~10 min; at 64, two invocations side by side (split with --only / --extra, OMP_NUM_THREADS=1 each)
finish a cell in ~4.5 min each: the 25 cells of the BENCHMARKS.md table took 80 min.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

BUILTIN = ["base", "pairs", "bm25", "st-margin", "topk", "simans", "resa2"]
RELATIVE_MARGIN = 0.05
RANGE_MAX = 100


def build_st_margin_run(recipe_path: Path, run_dir: Path, cache: Path, overrides: list[str]) -> Path:
    """A run folder (``dataset`` = DatasetDict {"triplets"}, ``report.json``) from sentence-transformers'
    ``mine_hard_negatives`` on synth's embeddings of the recipe's source. Deterministic (top sampling),
    so one folder serves every seed; kept when already there."""
    if (run_dir / "report.json").exists():
        return run_dir
    from datasets import Dataset, DatasetDict
    from sentence_transformers.util import mine_hard_negatives

    from synth.evaluate.fn_probe import load_and_embed
    from synth.mine import build_pairs
    from synth.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    t0 = time.perf_counter()
    data, corpus_emb, query_emb = load_and_embed(recipe)
    pairs = build_pairs(data)
    qtext = [data.queries.texts[r] for r in pairs.query_rows.tolist()]
    ptext = [data.corpus.texts[r] for r in pairs.positive_rows.tolist()]
    model = C.bundled_model()
    model.max_seq_length = recipe.embed.max_seq_length
    C.st_prepopulate(model, qtext, np.asarray(query_emb)[pairs.query_rows], data.corpus.texts, corpus_emb, ptext, cache)

    mined = mine_hard_negatives(
        Dataset.from_dict({"anchor": qtext, "positive": ptext}),
        model,
        corpus=list(data.corpus.texts),
        range_max=RANGE_MAX,
        relative_margin=RELATIVE_MARGIN,
        num_negatives=1,
        sampling_strategy="top",
        use_faiss=True,
        output_format="triplet",
        cache_folder=str(cache),
        verbose=False,
    )
    expected = {
        p.name
        for p in C.st_cache_files(
            model, list(dict.fromkeys(qtext)), list(dict.fromkeys(list(data.corpus.texts) + ptext)), cache
        )
    }
    if not expected <= {p.name for p in cache.glob("*.npy")} or len(list(cache.glob("*.npy"))) != 2:
        raise SystemExit(f"{cache}: sentence-transformers did not use the pre-populated embeddings")
    tmp = run_dir.with_name(f".{run_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    DatasetDict({"triplets": mined}).save_to_disk(str(tmp / "dataset"))
    report = {
        "tool": "sentence-transformers mine_hard_negatives",
        "source": recipe.source.model_dump(mode="json"),
        "params": {
            "range_max": RANGE_MAX,
            "relative_margin": RELATIVE_MARGIN,
            "num_negatives": 1,
            "sampling_strategy": "top",
            "use_faiss": True,
            "output_format": "triplet",
        },
        "pairs": len(pairs),
        "rows": len(mined),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    # The same false-negative probe as synth's rows (compare runs it on every recipe): half of each
    # multi-positive query's positives hidden, the rest given to mine_hard_negatives, one negative per pair.
    from fn_probe import anchor_st_probe

    from synth.evaluate.fn_probe import hide_positives

    visible, hidden = hide_positives(data, 0.5, 0)
    report["fn_probe"] = anchor_st_probe(
        data,
        corpus_emb,
        query_emb,
        visible,
        hidden,
        model,
        cache.with_name(cache.name + "-probe"),
        n=1,
        range_max=RANGE_MAX,
        shared_text_ok=True,
        relative_margin=RELATIVE_MARGIN,
    )
    (tmp / "report.json").write_text(json.dumps(report, indent=2))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    os.replace(tmp, run_dir)
    return run_dir


def entry_for(name: str, out: Path, overrides: list[str]) -> str:
    if name == "base":
        return "base"
    if name == "st-margin":
        # One folder per embedding setting: ST's cache file names do not encode max_seq_length.
        tag = "-".join(o.split("=", 1)[1] for o in overrides) or "default"
        return str(
            build_st_margin_run(
                C.RECIPES / "scifact_cmp_topk.yaml",
                out / f"st-margin-{tag}",
                C.CACHE_DIR / "st-cache" / f"scifact-compare-{tag}",
                overrides,
            )
        )
    return str(C.RECIPES / f"scifact_cmp_{name}.yaml")


def _run_reports(out: Path, label: str, seeds: list[int]) -> list[dict]:
    from synth.evaluate.compare import recipe_run_dir

    paths = [recipe_run_dir(out.resolve(), label, seed) / "report.json" for seed in seeds]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def synthetic_notes(rows: list[dict], out: Path) -> list[str]:
    """For every entry with synthetic data: how it stands against st-margin (mean over seeds, in units of
    the seeds' spread) and what its runs made, read from their report.json, so the 'why' is measured."""
    st = next((r for r in rows if r["entry"].startswith("st-margin")), None)
    notes = []
    for r in rows:
        reports = _run_reports(out, r["entry"], r["seeds"])
        if not reports or "synthetic_negatives" not in reports[0]:
            continue
        if st is not None:
            gap = r["ndcg@10"] - st["ndcg@10"]
            spread = math.hypot(r["ndcg@10_std"], st["ndcg@10_std"])
            verdict = "beats" if gap > 0 else "trails"
            notes.append(
                f"{r['entry']} {verdict} {st['entry']} by {abs(gap):.4f} nDCG@10 (mean over seeds {r['seeds']}; "
                f"{abs(gap) / spread:.1f}x the combined seed std {spread:.4f}), MRR@10 "
                f"{r['mrr@10'] - st['mrr@10']:+.4f}, R@100 {r['recall@100'] - st['recall@100']:+.4f}; its "
                f"negatives: FN-probe {_fmt(r['fn_probe'], 3)} vs {_fmt(st['fn_probe'], 3)}, probe rank "
                f"{_fmt(r['probe_rank'], 1)} vs {_fmt(st['probe_rank'], 1)} (a lower rank is a harder negative)."
            )
        per_seed = []
        for rep in reports:
            sq, sn, mix, lk = (
                rep.get("synthetic_queries", {}),
                rep["synthetic_negatives"],
                rep.get("mix", {}),
                rep.get("leakage", {}),
            )
            part = (
                f"seed {rep['seed']}: synthetic queries {sq.get('kept', 0)} kept of {sq.get('candidates', 0)} "
                f"(dropped {_nonzero(sq.get('dropped', {}))}); synthetic negatives {sn.get('kept', 0)} kept of "
                f"{sn.get('generated', 0)} from {sn.get('generation', {}).get('requests', 0)} requests (dropped "
                f"{_nonzero(sn.get('dropped', {}))}); after the judges {mix.get('pairs_with_synthetic', 0)} of "
                f"{mix.get('pairs', 0)} pairs got a synthetic negative, "
                f"{mix.get('synthetic_slots_refilled_by_mined', 0)} slots refilled with a mined one"
            )
            if lk.get("checked"):
                part += f"; leakage: {_leak(lk)}"
            per_seed.append(part)
        notes.append(
            f"{r['entry']} runs ({reports[0]['recipe'].get('llm', {}).get('kind')} LLM "
            f"{_models(reports[0])}): " + " | ".join(per_seed)
        )
    return notes


def _nonzero(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none"


def _models(report: dict) -> str:
    names = {m for st in report.get("llm", {}).get("stages", {}).values() for m in st.get("models", {})}
    return ", ".join(sorted(names)) or "-"


def _leak(leakage: dict) -> str:
    kinds = _nonzero(leakage.get("by_kind", {}))
    return (
        f"{leakage.get('pairs_overlapping', 0)} of {leakage.get('pairs_checked', 0)} training pairs overlap "
        f"{leakage.get('split')} ({kinds})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--only", default=",".join(BUILTIN), help=f"comma-separated subset of {BUILTIN}")
    ap.add_argument(
        "--extra", nargs="*", default=[], help="more recipe files (resa2 with judges, resa2_plus_synthetic)"
    )
    ap.add_argument("--max-steps", type=int, default=None, help="overrides --epochs (quick checks only)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=256, help="training and evaluation")
    ap.add_argument("--mine-max-seq-length", type=int, default=256, help="the embeddings the data is mined with")
    ap.add_argument(
        "--probe-all-seeds",
        action="store_true",
        help="run the false-negative probe with every seed (default: the first seed only)",
    )
    ap.add_argument("--out", type=Path, default=C.CACHE_DIR / "scifact-compare")
    ap.add_argument("--note", action="append", default=[], help="a line added to the notes (how the cells were made)")
    ap.add_argument("--no-append", action="store_true", help="print the table; do not append to BENCHMARKS.md")
    args = ap.parse_args()
    C.require_data("scifact")

    from synth.evaluate.compare import compare, parse_seeds

    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BUILTIN))
    if unknown:
        raise SystemExit(f"--only: unknown entries {unknown}; choose from {BUILTIN}")
    seeds = parse_seeds(args.seeds)
    from synth.core.outdir import claim_in_place

    claim_in_place(args.out, "compare")  # before the st-margin run lands in it: compare resumes only its own folder
    # The data is mined with --mine-max-seq-length embeddings, whatever the training budget is.
    overrides = [f"embed.max_seq_length={args.mine_max_seq_length}"] if args.mine_max_seq_length != 256 else []
    entries = [entry_for(n, args.out, overrides) for n in names] + [str(Path(e).resolve()) for e in args.extra]
    t0 = time.perf_counter()
    from synth.evaluate.compare import parse_entries

    anchor = next((e.label for e in parse_entries(entries) if e.label.startswith("st-margin")), None)
    rows = compare(
        entries,
        C.SHARED_DATA / "scifact",
        seeds,
        args.out,
        split="test",
        max_steps=args.max_steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        overrides=overrides,
        probe_all_seeds=args.probe_all_seeds,
        anchor=anchor,
    )
    wall = time.perf_counter() - t0

    def ms(r: dict, m: str) -> str:
        return f"{r[m]:.4f}" if not r["seeds"] else f"{r[m]:.4f} ± {r[m + '_std']:.4f}"

    def delta(r: dict) -> str:
        d = r.get("vs_anchor") or {}
        if "delta" not in d:
            return "-"
        return f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"

    headers = [
        "entry",
        "seeds",
        "nDCG@10",
        f"Δ nDCG@10 vs {anchor or 'st-margin'} [95% CI]",
        "MRR@10",
        "R@100",
        "FN-probe",
        "probe rank",
        "rows",
        "steps",
        "train s/seed",
        "eval s",
    ]
    table = C.md_table(
        headers,
        [
            [
                r["entry"],
                ",".join(map(str, r["seeds"])) or "-",
                ms(r, "ndcg@10"),
                delta(r),
                ms(r, "mrr@10"),
                ms(r, "recall@100"),
                _fmt(r.get("fn_probe"), 3),
                _fmt(r.get("probe_rank"), 1),
                r["rows"],
                r["steps"],
                r["train_seconds"],
                r["eval_seconds"],
            ]
            for r in rows
        ],
    )
    print(table)
    trained = [r for r in rows if r["steps"]]
    per_step = [r["train_seconds"] / r["steps"] for r in trained]
    evals = [r["eval_seconds"] for r in rows]
    notes = [
        f"SciFact (../shared/data/scifact): data mined on qrels/train.tsv, scored on qrels/test.tsv; "
        f"seeds {seeds}; {'max_steps ' + str(args.max_steps) if args.max_steps else f'{args.epochs:g} epoch(s)'}, "
        f"batch {args.batch_size}, lr 2e-5, max_seq_length {args.max_seq_length} (training and evaluation; the data "
        f"is mined with max_seq_length {args.mine_max_seq_length}), MultipleNegativesRankingLoss with "
        "no-duplicate batches, CPU; exact cosine search over the whole corpus.",
        "Same budget for all: one row per (query, positive) and one negative per row (triplet format), "
        "so every entry trains on at most 919 rows; st-margin rows are the pairs for which "
        f"mine_hard_negatives found a negative (top, relative_margin {RELATIVE_MARGIN}, range_max {RANGE_MAX}); the "
        "installed version groups rows by query text and excludes every positive given for it, as synth does.",
        "mean ± sample std over seeds; base = the untrained model (one value, seed-independent).",
        f"Δ nDCG@10 vs {anchor}: the mean over the test queries of (entry − anchor), each query's nDCG@10 averaged "
        "over the seeds first; 95% interval from a paired bootstrap over the test queries (10,000 resamples, "
        "seed 0; synth.evaluate.compare_table.paired_bootstrap). A gain counts only when the interval is above 0.",
        f"FN-probe / probe rank: synth fn-probe of each recipe on SciFact train (half of each multi-positive "
        f"query's positives hidden, probe seed 0), on the negatives the recipe publishes (after judges and mix), "
        f"recipe seed {'each seed (mean)' if args.probe_all_seeds else seeds[0]}; st-margin: mine_hard_negatives "
        "given the visible positives; rank = mean 1-based rank of a negative in its query's dense ranking.",
        "MEASURING.md reference (one seed): zero-shot 0.645, pairs 0.660, ST relative_margin 0.05 0.677.",
        f"wall {wall:.0f}s for this invocation (cached cells are free); measured train s/step "
        f"{', '.join(f'{r}' for r in (round(x, 2) for x in per_step)) or '-'}, eval s {', '.join(f'{e:.0f}' for e in evals)}.",
    ]
    if per_step:
        n_cells = (len(entries) - ("base" in names)) * len(seeds)
        steps_full = math.ceil(919 / args.batch_size)
        est = n_cells * (steps_full * float(np.mean(per_step)) + float(np.mean(evals))) + float(np.mean(evals))
        notes.append(
            f"expected full run ({len(entries)} entries, {len(seeds)} seed(s), 1 epoch = {steps_full} steps "
            f"each) at the measured speed: ~{est / 60:.0f} min, plus mining and embedding once."
        )
    notes += synthetic_notes(rows, args.out) + args.note
    for n in notes:
        print("-", n)
    if not args.no_append:
        C.write_result("SciFact: downstream quality of the training data (synth compare)", table, notes)


if __name__ == "__main__":
    main()
