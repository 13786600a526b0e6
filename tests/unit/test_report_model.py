"""The typed run report (synth/report/run.py): what ``finish`` checks before writing report.json.

The report below has the shape ``synth run recipes/resa2.yaml`` writes (values shortened); the real reports
of that run and of the main recipe are checked in tests/e2e/test_report_schema.py.
"""

from __future__ import annotations

import copy
import json
import math
import re

import pytest

from synth.report.run import ReportError, RunReport, check_report, report_schema
from tests.support.reports import RESA2, STATS, judged, leakage_checked


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


def test_every_section_refuses_unknown_keys():
    report = copy.deepcopy(RESA2)
    report["environment"]["gpu"] = "none"  # the code that writes it has a fixed list
    with pytest.raises(ReportError, match="environment.gpu"):
        check_report(text(report))


def test_a_judged_run_with_a_checked_leakage_passes():
    report = judged(RESA2)
    report["leakage"] = leakage_checked(pairs_dropped=1)
    typed = check_report(text(report))
    assert typed.judging.stages[0].model_report.mode == "fallback"
    assert typed.leakage.by_origin["real"].overlapping == 1


# Keys the formerly open sections (judging, selection, output, leakage) used to let through unchecked.
@pytest.mark.parametrize(
    "where",
    [
        ("output", "pairs_new_count"),
        ("selection", "pairs_ful"),
        ("judging", "finals"),
        ("judging", "stages", 0, "candidate"),
        ("judging", "stages", 0, "model_report", "sumary"),
        ("leakage", "checked=true", "pairs_droped"),  # the error names the variant the run wrote
        ("synthetic_queries", "kept_by_types"),
    ],
)
def test_a_misspelled_key_in_a_formerly_open_section_is_refused(where):
    report = judged(RESA2)
    report["leakage"] = leakage_checked()
    report["synthetic_queries"] = {
        "generation": {"requests": 2, "answered": 2, "failed": 0, "failures": {}, "docs": 2, "personas": 0},
        "candidates": 2,
        "kept": 2,
        "dropped": {"too_short": 0},
    }
    report["synthetic_queries"]["generation"]["by_type"] = {"question": 2}
    check_report(text(report))
    *path, key = where
    section = report
    for step in [p for p in path if not str(p).startswith("checked=")]:
        section = section[step]
    section[key] = 1
    with pytest.raises(ReportError, match=rf"{re.escape('.'.join(map(str, where)))}: Extra inputs are not permitted"):
        check_report(text(report))


def test_a_not_checked_leakage_needs_its_reason():
    report = copy.deepcopy(RESA2)
    report["leakage"] = {"checked": False}
    with pytest.raises(ReportError, match="leakage"):
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
