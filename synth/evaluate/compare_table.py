"""The table of ``synth compare``: each entry's mean ± std over seeds, its false-negative probe figures, and its
Δ against the anchor with a paired bootstrap interval over the test queries (MEASURING.md)."""

from __future__ import annotations

import statistics

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synth.evaluate.train_eval import METRICS

BASE = "base"  # the untrained model's entry kind
COLUMNS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@100": "R@100"}


@dataclass
class Entry:
    label: str
    kind: str  # "recipe" | "run" | "base"
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)  # a recipe entry's own --set items, after the common ones


def add_anchor_deltas(rows: list[dict], cells: dict[str, list[dict]], anchor: str) -> None:
    for row in rows:
        if row["entry"] != anchor and row["kind"] != BASE:
            pair = cells[row["entry"]], cells[anchor]
            row["vs_anchor"] = {"anchor": anchor, **(paired_bootstrap(*pair) or {})}
            row["vs_anchor_recall"] = paired_bootstrap(*pair, metric="recall@100")


def paired_bootstrap(
    cells_a: list[dict], cells_b: list[dict], metric: str = "ndcg@10", resamples: int = 10_000, seed: int = 0
) -> dict | None:
    """Δ ``metric`` of entry A over entry B with a paired bootstrap over the test queries (MEASURING.md):
    each query's value is averaged over the entry's seeds, the per-query differences are resampled with
    replacement ``resamples`` times, and the 2.5 / 97.5 percentiles of the resampled means bound the 95 %
    interval. None when a cell lacks per-query values."""

    from synth.evaluate.train_eval import per_query

    def averaged(cells: list[dict]) -> dict[str, float] | None:
        tables = [per_query(c, metric) for c in cells]
        if not tables or any(t is None for t in tables):
            return None
        return {q: float(np.mean([t[q] for t in tables])) for q in tables[0]}

    a, b = averaged(cells_a), averaged(cells_b)
    if a is None or b is None or set(a) != set(b):
        return None
    queries = sorted(a)
    diff = np.asarray([a[q] - b[q] for q in queries])
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {
        "metric": metric,
        "delta": float(diff.mean()),
        "ci95": [float(lo), float(hi)],
        "queries": len(queries),
        "resamples": resamples,
        "bootstrap_seed": seed,
        "seeds_a": [c.get("seed") for c in cells_a],
        "seeds_b": [c.get("seed") for c in cells_b],
        "significant": bool(lo > 0 or hi < 0),
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(statistics.fmean(values)), float(statistics.stdev(values)) if len(values) > 1 else 0.0


def aggregate(entry: Entry, cells: list[dict]) -> dict:
    row: dict = {
        "entry": entry.label,
        "kind": entry.kind,
        "path": str(entry.path) if entry.path else None,
        "seeds": [c["seed"] for c in cells if c["seed"] is not None],
        "n": len(cells),
    }
    for m in METRICS:
        row[m], row[f"{m}_std"] = _mean_std([c["metrics"][m] for c in cells])
    probes = [c["fn_probe"] for c in cells if isinstance(c.get("fn_probe"), dict)]
    row["fn_probe"] = _mean_std([p["fn_rate"] for p in probes])[0] if probes else None
    ranks = [p["mean_rank"] for p in probes if p.get("mean_rank") is not None]
    row["probe_rank"] = _mean_std(ranks)[0] if ranks else None
    trained = [c["training"] for c in cells if "training" in c]
    row["rows"] = (
        trained[0]["rows"]
        if trained and len({t["rows"] for t in trained}) == 1
        else (statistics.fmean(t["rows"] for t in trained) if trained else None)
    )
    row["steps"] = trained[0]["steps"] if trained else 0
    row["data_seconds"] = statistics.fmean(c.get("data_seconds", 0.0) for c in cells) if cells else 0.0
    row["train_seconds"] = statistics.fmean(c["seconds"]["train"] for c in cells) if cells else 0.0
    row["eval_seconds"] = statistics.fmean(c["seconds"]["eval"] for c in cells) if cells else 0.0
    return row


def render_markdown(summary: dict) -> str:
    heads = [
        "entry",
        "kind",
        "seeds",
        *COLUMNS.values(),
        "FN-probe",
        "probe rank",
        "rows",
        "steps",
        "train s",
        "eval s",
    ]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for r in summary["rows"]:
        cells = [r["entry"], r["kind"], ",".join(map(str, r["seeds"])) or "-"]
        for m in COLUMNS:
            cells.append(f"{r[m]:.4f}" if r["n"] == 1 and not r["seeds"] else f"{r[m]:.4f} ± {r[f'{m}_std']:.4f}")
        cells.append("-" if r["fn_probe"] is None else f"{r['fn_probe']:.3f}")
        cells.append("-" if r.get("probe_rank") is None else f"{r['probe_rank']:.1f}")
        rows = r["rows"]
        cells.append("-" if rows is None else (str(rows) if isinstance(rows, int) else f"{rows:.1f}"))
        cells += [str(r["steps"]), f"{r['train_seconds']:.1f}", f"{r['eval_seconds']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    s = summary["settings"]
    budget = f"max_steps {s['max_steps']}" if s["max_steps"] else f"{s['epochs']} epoch(s)"
    notes = [
        f"BEIR {summary['beir']}, split {summary['split']}; seeds {summary['seeds']}; {budget}, batch {s['batch_size']}, "
        f"lr {s['lr']}, max_seq_length {s['max_seq_length']}, base {s['base_model']}, "
        "MultipleNegativesRankingLoss (no-duplicates batches), exact cosine search.",
        "mean ± sample std over seeds; base = the untrained model (seed-independent, one value).",
        "FN-probe: share of the published mined negatives that are hidden positives when half of each "
        "multi-positive query's positives are hidden (`synth fn-probe`, after the recipe's judges and mix; run "
        "folders: their own fn_probe.json or report.json fn_probe), mean over seeds; probe rank: their mean "
        "rank in the query's own ranking (hardness, lower is harder); rows: training rows; train s / eval s: "
        "mean seconds per seed.",
    ]
    return "# synth compare\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
