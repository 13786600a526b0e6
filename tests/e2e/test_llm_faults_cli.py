"""Faults and bad input through the real CLI against a real loopback OpenAI-compatible server (our
fault-injecting one; nothing is mocked): endpoint down at start, endpoint dying mid-run and the resume,
the budget, the dry run, and an API key that must never leave the Authorization header."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE, REPO
from tests.support.edges import one_line_error
from tests.support.fake_openai import FakeOpenAI

SECRET = "sk-test-DO-NOT-LEAK-4f1c9a"
N_QUERIES = 12  # docs x personas_per_doc x types_per_doc below


def _recipe(tmp_path: Path, base_url: str, **extra) -> Path:
    recipe = {
        "name": "faults",
        "seed": 3,
        "source": {"kind": "beir", "path": str(EXAMPLE), "split": "train"},
        "llm": {
            "kind": "openai",
            "base_url": base_url,
            "model": "fake-model",
            "api_key_env": "SYNTH_TEST_KEY",
            "concurrency": 4,
            "max_retries": 2,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "timeout_s": 5,
        },
        "personas": {"source": "starter", "n": 3},
        "synthetic_queries": {
            "docs": 6,
            "personas_per_doc": 1,
            "types_per_doc": 2,
            "filters": {"min_chars": 1, "round_trip_k": None, "near_dup_threshold": None},
        },
        "output": {"format": "pairs"},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cache(cache_dir: Path, tmp_path: Path) -> Path:
    private = tmp_path / "cache"
    private.mkdir(exist_ok=True)
    (cache_dir / "embeddings").mkdir(parents=True, exist_ok=True)
    if not (private / "embeddings").exists():
        (private / "embeddings").symlink_to(cache_dir / "embeddings")
    return private


def _synth(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SYNTH_CACHE_DIR": str(cache),
        "SYNTH_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
        "SYNTH_TEST_KEY": SECRET,
    }
    return subprocess.run(
        [sys.executable, "-m", "synth", *args], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )


def _one_line(proc, code: int) -> str:
    """The error line; log lines (INFO, WARNING: stderr too) are not counted."""
    return one_line_error(proc, code)


def _cached(cache: Path) -> int:
    with sqlite3.connect(cache / "llm" / "requests.sqlite") as con:
        return con.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_endpoint_down_at_start_is_one_line_exit_2(cache_dir, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    out = tmp_path / "out"
    line = _one_line(_synth(_cache(cache_dir, tmp_path), "run", str(_recipe(tmp_path, url)), "--out", str(out)), 2)
    assert url in line and "connect" in line
    assert not out.exists() and not list(tmp_path.glob(".out.partial*"))


def test_api_key_never_reaches_logs_cache_or_outputs(cache_dir, tmp_path):
    with FakeOpenAI(api_key=SECRET) as server:
        cache = _cache(cache_dir, tmp_path)
        out = tmp_path / "out"
        proc = _synth(cache, "run", str(_recipe(tmp_path, server.url)), "--out", str(out), "--verbose")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert all(r.headers.get("authorization") == f"Bearer {SECRET}" for r in server.requests)
        assert not any(SECRET in r.body.decode() for r in server.requests)
    assert SECRET not in proc.stdout + proc.stderr
    for root in (out, cache / "llm"):
        for f in root.rglob("*"):
            if f.is_file():
                assert SECRET.encode() not in f.read_bytes(), f
    report = json.loads((out / "report.json").read_text())
    assert report["recipe"]["llm"]["api_key_env"] == "SYNTH_TEST_KEY"
    assert report["llm"]["requests_sent"] >= N_QUERIES


def test_endpoint_dies_mid_run_then_resumes_without_losing_work(cache_dir, tmp_path):
    port = _free_port()
    cache = _cache(cache_dir, tmp_path)
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, f"http://127.0.0.1:{port}/v1")
    with FakeOpenAI(port=port) as server:
        server.die_after(1 + 5)  # the schema probe, then 5 answers
        line = _one_line(_synth(cache, "run", str(recipe), "--out", str(out)), 3)
        assert "rerun" in line and str(port) in line
    done = _cached(cache)
    assert done == 5 and not out.exists()
    with FakeOpenAI(port=port) as server:  # the endpoint is back (same URL, so the same cache keys)
        proc = _synth(cache, "run", str(recipe), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        resent = [
            b
            for b in server.chat_bodies()
            if b.get("response_format", {}).get("json_schema", {}).get("name") != "probe"
        ]
    report = json.loads((out / "report.json").read_text())["llm"]["stages"]["synthetic_queries"]
    assert report["cache_hits"] == done and report["requests_sent"] == N_QUERIES - done
    assert len(resent) >= N_QUERIES - done
    rows = json.loads((out / "report.json").read_text())["synthetic_queries"]
    assert rows["candidates"] + rows["generation"]["failed"] == N_QUERIES


def test_budget_stops_before_it_is_exceeded_and_a_rerun_continues(cache_dir, tmp_path):
    cache = _cache(cache_dir, tmp_path)
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        plan = _synth(cache, "run", str(_recipe(tmp_path, server.url)), "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert server.chat_requests == 0  # a dry run sends nothing
        assert "synthetic_queries" in plan.stdout
        recipe = _recipe(tmp_path, server.url, budget={"tokens": 6000})
        line = _one_line(_synth(cache, "run", str(recipe), "--out", str(out)), 3)
        assert line.startswith("error: budget:") and "rerun" in line
        sent_tokens = sum(p + c for _, p, c in server.usage_log)
        assert 0 < _cached(cache) < N_QUERIES and sent_tokens <= 6000
        proc = _synth(cache, "run", str(recipe), "--out", str(out), "--set", "budget=null")
        assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads((out / "report.json").read_text())["llm"]["stages"]["synthetic_queries"]
    assert stage["cache_hits"] + stage["requests_sent"] == N_QUERIES and stage["cache_hits"] > 0


@pytest.mark.parametrize(
    "marker,failure",
    [
        ("[[bad_json:99]]", "invalid_json"),
        ("[[bad_schema:99]]", "schema"),
        ("[[refuse]]", "refusal"),
        ("[[length]]", "length"),
        ("[[bad_json:1]]", None),
    ],
)
def test_bad_answers_are_reasked_then_dropped_and_counted_never_kept(cache_dir, tmp_path, marker, failure):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "synthetic_query.j2").write_text("Write a {{ query_type }} query for {{ document | fence }} " + marker)
    (prompts / "synthetic_query.schema.json").write_text((REPO / "prompts" / "synthetic_query.schema.json").read_text())
    out = tmp_path / "out"
    with FakeOpenAI() as server:
        proc = _synth(
            _cache(cache_dir, tmp_path),
            "run",
            str(_recipe(tmp_path, server.url, prompts_dir=str(prompts))),
            "--out",
            str(out),
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        attempts = len([b for b in server.chat_bodies() if marker in json.dumps(b)])
    report = json.loads((out / "report.json").read_text())
    gen = report["synthetic_queries"]["generation"]
    stage = report["llm"]["stages"]["synthetic_queries"]
    if failure is None:  # valid on the second attempt: one re-ask each, then kept
        assert gen["failed"] == 0 and attempts == 2 * N_QUERIES and stage["attempts"] == 2 * N_QUERIES
        return
    assert gen["failed"] == N_QUERIES and gen["failures"] == {failure: N_QUERIES}
    from datasets import load_from_disk

    assert "synthetic_queries" not in load_from_disk(str(out / "dataset"))  # nothing unparseable is kept
    reasks = 2 if failure in ("invalid_json", "schema") else 0  # llm.max_reasks; refusals/truncations are not re-asked
    assert attempts == N_QUERIES * (1 + reasks)
