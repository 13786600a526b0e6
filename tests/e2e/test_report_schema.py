"""The typed report against real runs: the session's resa2 run and the main recipe's run (README command 1)
write reports that the model accepts, with every key it requires; ``synth schema --report`` prints its schema
and ``synth schema`` still prints the recipe's, unchanged (editors point at it)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from synth.report.run import RunReport, check_report, report_schema
from synth.recipe import recipe_schema


@pytest.mark.parametrize("run", ["session_resa2_run", "session_quickstart_run"])
def test_real_reports_match_the_model_and_its_schema(run, request):
    folder = request.getfixturevalue(run)
    text = (folder / "report.json").read_text(encoding="utf-8")
    check_report(text)  # finish() ran it before writing; this holds it to the file as published
    report = json.loads(text)
    required = {name for name, field in RunReport.model_fields.items() if field.is_required()}
    assert required <= set(report) <= set(RunReport.model_fields)
    jsonschema.validate(report, report_schema())  # the printed schema agrees with the model
    if run == "session_quickstart_run":  # the main recipe has every optional section but clamps
        assert set(RunReport.model_fields) - set(report) == {"clamps"}


def test_schema_prints_the_recipe_by_default_and_the_report_with_a_flag(synth_cli):
    assert json.loads(synth_cli("schema", check=True).stdout) == recipe_schema()
    assert json.loads(synth_cli("schema", "--report", check=True).stdout) == report_schema()
