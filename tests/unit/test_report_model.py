"""The typed run report (synth/pipeline/report_model.py): what ``finish`` checks before writing report.json.

The report below has the shape ``synth run recipes/resa2.yaml`` writes (values shortened); the real reports
of that run and of the main recipe are checked in tests/e2e/test_report_schema.py.
"""

from __future__ import annotations

import copy
import json
import math

import pytest

from synth.pipeline.report_model import ReportError, RunReport, check_report, report_schema

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


def text(report: dict) -> str:
    return json.dumps(report, indent=2)


def test_a_resa2_report_passes():
    check_report(text(RESA2))
    assert set(RESA2) <= set(RunReport.model_fields)


@pytest.mark.parametrize("key", ["output", "llm", "stages", "environment", "leakage", "seconds"])
def test_a_missing_section_is_a_bug(key):
    report = {k: v for k, v in RESA2.items() if k != key}
    with pytest.raises(ReportError, match=rf"^report.json does not match .*: {key}: Field required"):
        check_report(text(report))


def test_an_undeclared_top_level_key_is_a_bug():
    with pytest.raises(ReportError, match="surprise: Extra inputs are not permitted"):
        check_report(text({**RESA2, "surprise": {}}))


def test_fixed_sections_refuse_unknown_keys_open_ones_keep_them():
    report = copy.deepcopy(RESA2)
    report["output"]["pairs_new_count"] = 3  # per-format counts vary: allowed
    report["leakage"] = {"checked": True, "folder": "beir", "split": "test", "pairs_checked": 10}
    check_report(text(report))
    report["environment"]["gpu"] = "none"  # the code that writes it has a fixed list
    with pytest.raises(ReportError, match="environment.gpu"):
        check_report(text(report))


def test_a_wrong_type_names_the_key():
    report = copy.deepcopy(RESA2)
    report["output"]["rows"] = "many"
    with pytest.raises(ReportError, match="output.rows"):
        check_report(text(report))


def test_nan_scores_pass_as_json_dumps_writes_them():
    report = copy.deepcopy(RESA2)
    report["scores"]["negative"] = {**STATS, "mean": math.nan}
    assert "NaN" in text(report)
    check_report(text(report))


def test_the_schema_names_every_section_and_forbids_others():
    schema = json.loads(json.dumps(report_schema()))  # plain JSON
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(RunReport.model_fields)
    assert {
        "recipe",
        "seed",
        "input_findings",
        "leakage",
        "output",
        "llm",
        "licenses",
        "stages",
        "engine",
        "environment",
        "started_at",
        "seconds",
    } == set(schema["required"])
    # sections a run may not have are optional: no mining for `format: pairs`, no judging without a judge
    assert {"index", "mining", "judging", "embedding", "personas", "synthetic_queries"}.isdisjoint(schema["required"])
