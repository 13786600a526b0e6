"""The SQLite request cache: shared by concurrent processes, keeps only final responses, loses no
committed response when its writer is killed, keys on the full request, and survives a damaged file."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from synth.llm.accounting import Accounting, request_tokens_upper
from synth.llm.base import ChatRequest, ChatResponse, request_key
from synth.llm.cache import RequestCache
from synth.llm.config import Budget, Price

IDENTITY = {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m"}

WRITER = textwrap.dedent("""
    import sys, time
    from synth.llm.base import ChatResponse
    from synth.llm.cache import RequestCache
    cache = RequestCache(sys.argv[1])
    tag, n, slow = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    for i in range(n):
        cache.put(f"{tag}-{i}", ChatResponse(text=f"{tag} answer {i}", tokens_in=3, tokens_out=4))
        print(i, flush=True)
        time.sleep(slow)
""")


def _writer(path, tag: str, n: int, slow: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), tag, str(n), str(slow)], stdout=subprocess.PIPE, text=True
    )


def test_concurrent_processes_share_one_cache(tmp_path):
    path = tmp_path / "requests.sqlite"
    RequestCache(path).close()
    procs = [_writer(path, f"w{j}", 150) for j in range(4)]
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == 0
    cache = RequestCache(path)
    assert len(cache) == 600
    got = cache.get_many([f"w{j}-{i}" for j in range(4) for i in range(150)])
    assert len(got) == 600 and got["w3-149"].text == "w3 answer 149" and got["w3-149"].cached
    assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_killed_writer_loses_no_committed_response(tmp_path):
    path = tmp_path / "requests.sqlite"
    proc = _writer(path, "k", 10_000, slow=0.002)
    seen = -1
    deadline = time.time() + 60
    while seen < 50 and time.time() < deadline:
        seen = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    cache = RequestCache(path)
    got = cache.get_many([f"k-{i}" for i in range(seen + 1)])
    assert len(got) == seen + 1  # every put that returned before the kill is there


def test_only_final_responses_are_stored(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.put("ok", ChatResponse(text="{}", parsed={}))
    cache.put("bad-json", ChatResponse(text="nope", error="invalid_json", finish_reason="stop"))
    cache.put("down", ChatResponse(text=None, error="transport", finish_reason="error"))
    cache.put("busy", ChatResponse(text=None, error="rate_limited", finish_reason="error"))
    assert set(cache.get_many(["ok", "bad-json", "down", "busy"])) == {"ok", "bad-json"}


def test_key_covers_backend_messages_params_and_schema():
    base = ChatRequest.make(
        [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        {"temperature": 0.5, "max_tokens": 10},
        {"type": "object"},
    )
    k = request_key(IDENTITY, base)
    assert k == request_key(
        dict(IDENTITY),
        ChatRequest.make([("system", "s"), ("user", "u")], {"max_tokens": 10, "temperature": 0.5}, {"type": "object"}),
    )
    variants = [
        request_key({**IDENTITY, "base_url": "http://other/v1"}, base),
        request_key({**IDENTITY, "model": "m2"}, base),
        request_key({**IDENTITY, "kind": "local"}, base),
        request_key(
            IDENTITY, ChatRequest.make([("system", "S"), ("user", "u")], dict(base.params), {"type": "object"})
        ),
        request_key(
            IDENTITY, ChatRequest.make(list(base.messages), {"temperature": 0.6, "max_tokens": 10}, {"type": "object"})
        ),
        request_key(IDENTITY, ChatRequest.make(list(base.messages), dict(base.params), {"type": "array"})),
        request_key(IDENTITY, ChatRequest.make(list(base.messages), dict(base.params), None)),
    ]
    assert len({k, *variants}) == len(variants) + 1


def test_budget_admits_only_what_fits_and_cost_uses_the_price_table():
    req = ChatRequest.make([("user", "x" * 400)], {"max_tokens": 100})
    tin, tout = request_tokens_upper(req, max_reasks=2)
    assert tin >= 3 * 400 and tout == 300
    acc = Accounting({"m": Price(input=1.0, output=2.0)}, Budget(tokens=(tin + tout) * 3 + 1))
    assert acc.affordable("m", [(tin, tout)] * 10) == 3
    acc.record("s", "m", ChatResponse(text="a", tokens_in=tin, tokens_out=tout))
    assert acc.affordable("m", [(tin, tout)] * 10) == 2
    assert acc.cost("m", 1_000_000, 1_000_000) == 3.0
    usd = Accounting({}, Budget(usd=1.0))
    assert usd.affordable("unpriced", [(1, 1)]) == 0  # a USD budget never runs a model it cannot price
    rep = acc.report()
    assert rep["requests_sent"] == 1 and rep["stages"]["s"]["models"]["m"]["tokens_in"] == tin
    assert rep["cost_usd"] > 0


# -- damaged database files (issue 14) --------------------------------------------------------------
def _store(path):
    from synth.judge.store import VerdictStore

    return VerdictStore(path)


def _filled(path) -> bytes:
    cache = RequestCache(path)
    for i in range(2000):
        cache.put(f"k-{i}", ChatResponse(text=f"answer {i} " * 20, tokens_in=3, tokens_out=4))
    cache.close()  # the last connection checkpoints the WAL into the file
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
@pytest.mark.parametrize("opener", [RequestCache, _store], ids=["request_cache", "verdict_store"])
def test_a_damaged_database_is_moved_aside_and_a_fresh_one_started(tmp_path, caplog, damage, opener):
    path = tmp_path / "cache.sqlite"
    whole = _filled(path)
    bad = whole[: len(whole) // 2] if damage == "truncated" else os.urandom(len(whole))
    path.write_bytes(bad)
    with caplog.at_level(logging.WARNING, logger="synth.cache"):
        db = opener(path)
    warned = [r.getMessage() for r in caplog.records if r.name == "synth.cache"]
    assert len(warned) == 1 and str(path) in warned[0] and "starting a fresh one" in warned[0], warned
    (aside,) = tmp_path.glob("cache.sqlite.corrupt-*")
    assert aside.read_bytes() == bad  # kept for a post-mortem, never deleted
    if isinstance(db, RequestCache):
        assert len(db) == 0
        db.put("new", ChatResponse(text="fresh", tokens_in=1, tokens_out=1))
        assert db.get_many(["new"])["new"].text == "fresh"
    else:
        assert db.count() == 0
    db.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synth.cache"):
        opener(path).close()  # the fresh file is sound: no second warning, nothing moved again
    assert not [r for r in caplog.records if r.name == "synth.cache"]
    assert len(list(tmp_path.glob("cache.sqlite.corrupt-*"))) == 1


def test_a_busy_database_is_not_taken_for_a_damaged_one(tmp_path, monkeypatch):
    """ "database is locked" is another run at work, not damage: it is waited for up to SYNTH_LOCK_TIMEOUT,
    then raised as one line, and nothing is moved."""
    from synth.core.errors import ResumableFailure
    from synth.core.files import open_sqlite

    monkeypatch.setenv("SYNTH_LOCK_TIMEOUT", "1")

    path = tmp_path / "cache.sqlite"
    _filled(path)
    holder = sqlite3.connect(str(path), isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ResumableFailure, match="locked"):
            open_sqlite(path, lambda db: None, timeout=0.1)
    finally:
        holder.close()
    assert not list(tmp_path.glob("cache.sqlite.corrupt-*"))
    assert len(RequestCache(path)) == 2000
