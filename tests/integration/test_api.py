"""The Python API (``synth.run``, ``synth.plan``): the same code and the same bytes as the commands."""

from __future__ import annotations

import json
import re

import pytest

import synth
from synth.core.files import json_default
from tests.support.digests import check, run_digest
from tests.support.runs import MAIN_RECIPE, RESA2_RECIPE

# timings, dates and the machine: different in any two runs
_VARIES = {"stages", "seconds", "started_at", "environment"}


def _stable(report: dict) -> dict:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not (k.endswith("seconds") or k in _VARIES)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    return strip(json.loads(json.dumps(report, default=json_default)))


@pytest.fixture
def env(cache_dir, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(cache_dir))  # the recipe's cache dir, as the CLI fixtures use
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("SYNTH_PROGRESS", "0")


@pytest.mark.slow
def test_run_writes_what_the_command_writes(env, session_resa2_run, tmp_path):
    report = synth.run(RESA2_RECIPE, out=tmp_path / "api")
    assert run_digest(tmp_path / "api", card=True) == run_digest(session_resa2_run, card=True)
    check("resa2", tmp_path / "api", card=True)
    written = json.loads((tmp_path / "api" / "report.json").read_text(encoding="utf-8"))
    cli = json.loads((session_resa2_run / "report.json").read_text(encoding="utf-8"))
    assert _stable(report) == _stable(written) == _stable(cli)
    assert report["output"]["rows"] > 0


def test_overrides_are_set_values(env, tmp_path):
    recipe = synth.load_recipe(RESA2_RECIPE, {"mine.n_negatives": 3, "name": "renamed", "output.files": ["tevatron"]})
    assert (recipe.mine.n_negatives, recipe.name, recipe.output.files) == (3, "renamed", ["tevatron"])
    again = synth.load_recipe(recipe, {"mine.n_negatives": 4})  # a Recipe takes overrides too
    assert (again.mine.n_negatives, again.name) == (4, "renamed")


def test_plan_is_the_dry_run(env, synth_cli, tmp_path):
    fresh = tmp_path / "fresh-cache"
    plan = synth.plan(MAIN_RECIPE, overrides={"embed.cache_dir": str(fresh)})
    assert not fresh.exists()  # nothing written, not even an empty request cache
    by_stage = {r["stage"]: r for r in plan["stages"]}
    assert list(by_stage) == ["synthetic_queries", "synthetic_negatives"]
    # the recipe: 16 docs x 1 persona x 1 type; 10 (query, positive) pairs; 2 re-asks bound each request
    assert (by_stage["synthetic_queries"]["requests"], by_stage["synthetic_negatives"]["requests"]) == (16, 10)
    assert by_stage["synthetic_queries"]["tokens_out_upper"] == 16 * 96 * 3
    assert by_stage["synthetic_negatives"]["tokens_out_upper"] == 10 * 256 * 3
    assert plan["totals"]["to_send"] == plan["totals"]["requests"] == 26
    # the command prints the same plan (same cache: the session's)
    printed = synth_cli("run", str(MAIN_RECIPE), "--dry-run", check=True).stdout
    same = synth.plan(MAIN_RECIPE)
    total = next(line for line in printed.splitlines() if "total" in line)
    numbers = [int(x) for x in re.findall(r"\b\d+\b", total)]
    t = same["totals"]
    assert numbers == [
        t["requests"],
        t["cached"],
        t["to_send"],
        t["tokens_in_upper"],
        t["tokens_out_upper"],
        t["tokens_in_estimate"],
    ]
