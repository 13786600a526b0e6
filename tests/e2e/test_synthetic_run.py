"""The synthetic-data recipe on the embedded default (SmolLM2-135M under xllamacpp), end to end:
personas -> synthetic queries -> filters -> synthetic negatives -> mining -> datasets + report.
The first run is killed part-way and resumed (no lost or duplicated rows), then rerun (0 LLM calls): one cold
generation per session serves all of it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_from_disk

from synth.formats.st import with_provenance
from tests.conftest import REPO

RECIPE = REPO / "recipes" / "synthetic_queries.yaml"
# Half the recipe's 16 documents and 8 negative pairs: every LLM answer here is generated cold (the module's cost:
# minutes on 2 busy cores), and 16 query candidates (4 kept by the round trip, as the main recipe's 16 keep 4)
# and 4 negative pairs exercise every path the recipe's counts do; the kill still lands after 10 of ~21 answers.
DOCS, TYPES = 8, 2
SMALL = ("--set", f"synthetic_queries.docs={DOCS}", "--set", "synthetic_negatives.max_pairs=4")
pytestmark = pytest.mark.slow


def _private_cache(cache_dir: Path, tmp_path: Path) -> Path:
    """A fresh LLM cache that shares the session's embedding cache (re-embedding would cost a minute)."""
    private = tmp_path / "cache"
    private.mkdir()
    (cache_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    (private / "embeddings").symlink_to(cache_dir / "embeddings")
    return private


def _env(cache: Path) -> dict:
    return {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def _synth(cache: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synth", *args],
        capture_output=True,
        text=True,
        env=_env(cache),
        timeout=timeout,
        cwd=REPO,
    )


def _rows(folder: Path, name: str) -> list[dict]:
    """A config of the run's DatasetDict (``triplets`` holds the training rows), joined with its
    provenance config when it has one."""
    return with_provenance(load_from_disk(str(folder / "dataset")), name).to_list()


def _configs(folder: Path) -> set[str]:
    return set(load_from_disk(str(folder / "dataset")))


@pytest.fixture(scope="module")
def first_run(cache_dir, tmp_path_factory):
    """The recipe's first run into an empty LLM cache, SIGKILLed once it has 10 answers and then resumed.

    One cold generation serves every test here (it is the costly part: minutes on 2 cores): the resumed run's
    output is what a first run must publish, and the kill is checked by test_killed_run_resumes_...
    """
    tmp = tmp_path_factory.mktemp("synthetic")
    cache = _private_cache(cache_dir, tmp)
    out = tmp / "run"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "run", str(RECIPE), "--out", str(out), *SMALL],
        cwd=REPO,
        env=_env(cache),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while _cached_responses(cache) < 10 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    finished_early = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    killed = {"finished_early": finished_early, "before": _cached_responses(cache), "out_existed": out.exists()}
    resumed = _synth(cache, "run", str(RECIPE), "--out", str(out), *SMALL)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"out": out, "cache": cache, "seconds": time.perf_counter() - t0, "tmp": tmp, "killed": killed}


@pytest.fixture(scope="module")
def rerun(first_run):
    """A second run on the first run's cache: every LLM answer is a cache hit."""
    out2 = first_run["tmp"] / "rerun"
    proc = _synth(first_run["cache"], "run", str(RECIPE), "--out", str(out2), *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out2


def test_writes_personas_queries_and_negatives_with_provenance(first_run):
    out = first_run["out"]
    report = json.loads((out / "report.json").read_text())
    personas = _rows(out, "personas")
    assert len(personas) == 12 and all(p["license"] for p in personas)
    assert sum(s["chosen"] for s in report["personas"]["strata"].values()) == 12  # coverage per stratum

    candidates = _rows(out, "synthetic_queries")
    assert len(candidates) + report["synthetic_queries"]["generation"]["failed"] == DOCS * 1 * TYPES
    assert len({c["id"] for c in candidates}) == len(candidates)
    for c in candidates:
        assert c["model"].startswith("SmolLM2") and len(c["prompt_sha256"]) == 64 and c["query_type"]
    kept = [c for c in candidates if c["kept"]]
    assert kept, "every synthetic query was filtered out"
    dropped = report["synthetic_queries"]["dropped"]
    assert sum(dropped.values()) == len(candidates) - len(kept)
    assert {c["dropped_by"] for c in candidates if not c["kept"]} <= set(dropped)

    train = _rows(out, "triplets")
    synthetic_rows = [r for r in train if r["query_origin"] == "synthetic"]
    assert {r["query_id"] for r in synthetic_rows} <= {c["id"] for c in kept}
    assert all(r["query_model"] and r["query_prompt_sha256"] for r in synthetic_rows)
    assert any(r["query_origin"] == "real" for r in train)

    assert {"triplets", "personas", "synthetic_queries"} <= _configs(out)
    assert not (out / "personas").exists()  # everything lives in the one DatasetDict
    if "synthetic_negatives" in _configs(out):
        negatives = _rows(out, "synthetic_negatives")
        assert all(n["synthetic"] is True and n["negative"] != n["positive"] for n in negatives)
        assert {n["query_id"] for n in negatives} <= {c["id"] for c in kept}
    assert report["synthetic_negatives"]["pairs"] <= 4

    llm = report["llm"]
    for key in ("requests_sent", "cache_hits", "tokens_in", "tokens_out", "failed"):
        assert key in llm and key in llm["totals"]
        for stage in ("synthetic_queries", "synthetic_negatives"):
            assert key in llm["stages"][stage]
    assert llm["requests_sent"] > 0 and llm["tokens_out"] > 0


def test_rerun_makes_no_llm_calls_and_reproduces_the_data(first_run, rerun):
    out2 = rerun
    report = json.loads((out2 / "report.json").read_text())
    assert report["llm"]["requests_sent"] == 0
    assert report["llm"]["cache_hits"] > 0
    for name in ("personas", "synthetic_queries", "triplets"):
        assert _rows(out2, name) == _rows(first_run["out"], name), name


def _cached_responses(cache: Path) -> int:
    db = cache / "llm" / "requests.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_killed_run_resumes_without_losing_or_duplicating_rows(first_run, rerun):
    cache, out, killed = first_run["cache"], first_run["out"], first_run["killed"]
    assert not killed["finished_early"], "the run finished before it could be killed"
    before = killed["before"]
    assert before >= 10 and not killed["out_existed"]

    report = json.loads((out / "report.json").read_text())
    llm = report["llm"]
    assert llm["cache_hits"] >= before  # every response completed before the kill was reused
    probe = llm["stages"].get("probe", {}).get("requests_sent", 0)  # the schema probe at start is never cached
    # (the rerun fixture may have run already: it sends no request, so the store still holds what this run left)
    assert llm["requests_sent"] - probe + llm["cache_hits"] == _cached_responses(cache)

    candidates = _rows(out, "synthetic_queries")
    assert len({c["id"] for c in candidates}) == len(candidates)
    assert len(candidates) + report["synthetic_queries"]["generation"]["failed"] == DOCS * TYPES
    train = _rows(out, "triplets")
    keys = [(r["query_id"], r["positive_id"]) for r in train]
    assert len(keys) == len(set(keys))

    again = rerun
    assert json.loads((again / "report.json").read_text())["llm"]["requests_sent"] == 0
    for name in ("synthetic_queries", "triplets"):
        assert _rows(again, name) == _rows(out, name)


def test_dry_run_prints_the_plan_and_sends_nothing(first_run, tmp_path):
    proc = _synth(first_run["cache"], "run", str(RECIPE), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthetic_queries" in proc.stdout and "total" in proc.stdout
    fresh = _private_cache(first_run["cache"], tmp_path)
    proc = _synth(fresh, "run", str(RECIPE), "--dry-run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _cached_responses(fresh) == 0
