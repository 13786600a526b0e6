"""Run reports of the shape ``synth run`` writes (values shortened), for tests of the typed report and its
readers that need no run: ``RESA2`` is ``recipes/resa2.yaml``'s; ``judged`` adds the sections a judged run
with a learned judge writes, ``leakage_checked`` the section of a run checked against an evaluation split.
Shapes taken from real reports; tests/e2e/test_report_schema.py checks real runs' reports.
"""

from __future__ import annotations

import copy

STATS = {"count": 3, "mean": 0.3, "min": 0.1, "p5": 0.1, "median": 0.3, "p95": 0.5, "max": 0.5}
USAGE = {
    "requests_sent": 0,
    "cache_hits": 0,
    "tokens_in": 0,
    "tokens_out": 0,
    "failed": 0,
    "attempts": 0,
    "failures": {},
    "cost_usd": 0.0,
}
RESA2 = {
    "recipe": {"name": "resa2-scifact-mini", "seed": 0, "source": {"kind": "beir", "path": "../examples/scifact-mini"}},
    "seed": 0,
    "input_findings": {"counts": {}, "examples": {}},
    "index": {
        "factory": "Flat",
        "metric": "cosine",
        "device": "cpu",
        "k": 200,
        "vectors": 1200,
        "dim": 384,
        "build_seconds": 1e-06,
        "search_seconds": 0.004,
        "notes": [],
        "recall": "exact",
        "recall_at_k": 1.0,
        "recall_at_n": 1.0,
        "recall_k": 0,
        "recall_n": 0,
        "recall_queries": 0,
        "target_recall": 0.99,
        "calibration_seconds": 0.0,
        "nprobe": None,
        "ef_search": None,
        "refine_factor": None,
    },
    "mining": {
        "pairs": 171,
        "short_pairs": 0,
        "backfilled_pairs": 0,
        "backfilled_negatives": 0,
        "filtered_candidates": 0,
        "candidate_depth": 200,
        "search_seconds": 0.004,
        "sample_seconds": 0.008,
        "extra": {},
    },
    "scores": {"space": "cosine", "negative": STATS, "positive": STATS, "positive_minus_negative": STATS},
    "output": {
        "format": "n-tuple",
        "rows": 171,
        "pairs": 171,
        "short_pairs_dropped": 0,
        "negatives": 855,
        "train_columns": ["anchor", "positive", "negative_1"],
        "columns": ["anchor", "positive", "negative_1"],
        "provenance_columns": ["row_id", "query_id"],
        "configs": {"triplets": 171, "triplets_provenance": 171},
        "files": {},
    },
    "embedding": {"rows": 1350, "chunks_total": 2, "chunks_reused": 0, "seconds": 65.1, "device": "cpu"},
    "leakage": {"checked": False, "reason": "no leakage section in the recipe"},
    "llm": {**USAGE, "totals": dict(USAGE), "stages": {}, "budget": None, "prices": {}},
    "licenses": {"corpus": "unknown", "embedder": "apache-2.0"},
    "stages": {
        "load": {"rows": 171, "seconds": 0.02, "corpus": 1200, "queries": 150},
        "embed": {"rows": 1200, "seconds": 64.3},
        "write": {"rows": 171, "seconds": 0.05},
    },
    "engine": {
        "kind": "local",
        "address": None,
        "workers": 1,
        "cluster": {"nodes": 1, "cpus": 2, "gpus": 0},
        "start_seconds": 0.0,
        "stages": {},
        "stage_seconds": {"load": 0.02, "embed": 64.3, "write": 0.05},
    },
    "environment": {
        "synth": "0.1.0",
        "python": "3.11.7",
        "platform": "Linux",
        "cpu_count": 2,
        "torch": "2.13.0",
        "faiss": "1.9.0",
        "sentence_transformers": "5.1.0",
        "openai": "1.99.0",
        "xllamacpp": None,
        "vllm": None,
    },
    "started_at": "2026-12-02T13:46:07Z",
    "seconds": 65.395,
}


STAGE = {
    "stage": "risk",
    "kind": "fn_risk",
    "fingerprint": "a1",
    "candidates": 40,
    "reused": 0,
    "judged": 40,
    "negative": 30,
    "false_negative": 6,
    "uncertain": 4,
    "failed": 0,
    "seconds": 0.5,
}
MODEL_REPORT = {
    "features": ["dense", "log_rank"],
    "training_queries": 77,
    "folds": 5,
    "depth": 100,
    "replay_depth": 1000,
    "target_fn_ratio": 0.1,
    "n_select": 5,
    "min_hidden": 65,
    "training_replicates": 187,
    "training_candidates": 18700,
    "hidden_positives": 177,
    "mode": "fallback",
    "fitted": False,
    "why": "no cut-off meets the target",
    "fallback": {"kind": "embedding_margin", "p": 0.5},
    "summary": "fell back",
    "notices": ["fn_risk risk: fell back"],
    "fit_seconds": 3.0,
}


def judged(report: dict) -> dict:
    """``report`` with the judging / mix / selection sections of a judged run (one fn_risk stage)."""
    r = copy.deepcopy(report)
    r["judging"] = {
        "cascade": {"path": "fn_risk", "name": "fn_risk", "resolved": {"name": "fn_risk", "stages": []}},
        "candidates": {"mined": 40, "synthetic": 0, "unique": 40},
        "final": {"negative": 30, "false_negative": 6, "uncertain": 4},
        "stages": [{**STAGE, "model_report": copy.deepcopy(MODEL_REPORT)}],
        "store": "$SYNTH_CACHE_DIR/verdicts/x.sqlite",
        "policy": {"policy": "drop_false_negatives", "cap": None, "examples_in": 8, "negatives_in": 40},
        "cross_encoder": None,
    }
    r["mix"] = {
        "pairs": 8,
        "mined_candidates": 40,
        "synthetic_candidates": 0,
        "removed_by_policy": 10,
        "dropped_duplicates": 0,
        "mined_used": 30,
        "synthetic_used": 0,
        "pairs_with_synthetic": 0,
        "synthetic_slots_refilled_by_mined": 0,
        "pairs_short": 0,
        "pairs_dropped_by_policy": 0,
        "target": {"mined": 5, "synthetic": 0},
    }
    r["selection"] = {
        "target": {"mined": 5, "synthetic": 0},
        "rounds": 1,
        "pairs": 8,
        "pairs_full": 8,
        "pairs_short": 0,
        "short_reasons": {"ranking_exhausted": 0, "backfill_off": 0},
        "pairs_dropped_by_policy": 0,
        "pairs_backfilled": 0,
        "backfilled_candidates": 0,
        "backfill_depth_searched": None,
    }
    return r


def leakage_checked(pairs_dropped: int = 0) -> dict:
    """The ``leakage`` section of a run checked against ``beir``'s test split."""
    kinds = {"query_id": 1, "query_text": 1, "positive": 0, "negative": 0}
    return {
        "checked": True,
        "folder": "beir",
        "split": "test",
        "eval_queries": 10,
        "eval_documents": 100,
        "pairs_checked": 8,
        "pairs_overlapping": 1,
        "by_kind": kinds,
        "by_origin": {"real": {"pairs": 8, "overlapping": 1, **kinds}},
        "drop": bool(pairs_dropped),
        "pairs_dropped": pairs_dropped,
    }
