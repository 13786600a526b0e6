"""Runs that several test files need, done once per test session (tests/conftest.py exposes them as fixtures).

A run of a recipe on the bundled example costs from 15 s (resa2) to minutes (the main recipe, with its LLM
stages and a trained cross-encoder) on 2 cores. Tests that only read a run's output share one; a test that
writes into a run folder (a rerun, a card rewritten in place) works on its own copy (``copy_run``), so the
shared folder stays as the run wrote it, whatever order the tests run in.

The main recipe's run is not even done once when CI already did it: README command 1 (.ci/run) writes
``runs/quickstart`` just before the tests. ``reusable_quickstart`` says whether that folder is a finished
run of the current recipe and code; when it is not (a local checkout, an edited recipe, newer code) the
session runs the recipe into a temp folder instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "runs" / "quickstart"  # where README command 1 (and so .ci/run) writes the main recipe's run
MAIN_RECIPE = REPO / "recipes" / "resa2_plus_synthetic.yaml"
RESA2_RECIPE = REPO / "recipes" / "resa2.yaml"


def synth_env(cache: Path) -> dict:
    return {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def run_synth(cache: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """``synth ARGS`` in a subprocess (the real console entry point); raises with its stderr when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "synth", *args],
        capture_output=True,
        text=True,
        env=synth_env(cache),
        timeout=timeout,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(f"synth {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a shared run folder (marker included, so synth may replace it), for a test that writes."""
    shutil.copytree(run, dest, symlinks=True)
    return dest


def _leaves(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _leaves(val, f"{prefix}{key}.").items()}
    if isinstance(obj, list):
        return {k: v for i, val in enumerate(obj) for k, v in _leaves(val, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): obj}


def _pathlike(value: object) -> bool:
    # The report stores paths rewritten for publishing (relative, $SYNTH_CACHE_DIR), the loaded recipe absolute
    # ones; they are compared as "some path" only.
    return isinstance(value, str) and ("/" in value or "$" in value)


def _newest_source_mtime() -> float:
    # synth/ holds the code and (synth/assets) the recipes, prompts, judges and example data the run read.
    return max(p.stat().st_mtime for p in (REPO / "synth").rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def reusable_quickstart(folder: Path = QUICKSTART, recipe: Path = MAIN_RECIPE) -> bool:
    """True when ``folder`` is a finished synth run of ``recipe`` as it is now (same settings, no override),
    written after the last change to synth/ (code or assets). Anything else is run again, so a stale or
    hand-edited folder can never stand in for the current code's output."""
    from synth.core.outdir import is_synth_output
    from synth.recipe import load_recipe

    report_file = folder / "report.json"
    if not (is_synth_output(folder) and report_file.is_file() and (folder / "dataset").is_dir()):
        return False
    try:
        stored = json.loads(report_file.read_text(encoding="utf-8")).get("recipe") or {}
    except ValueError:
        return False
    if report_file.stat().st_mtime < _newest_source_mtime():
        return False
    want = _leaves(load_recipe(recipe).model_dump(mode="json"))
    have = _leaves(stored)
    return all(
        key in have and (_pathlike(val) and _pathlike(have[key]) or have[key] == val) for key, val in want.items()
    )
