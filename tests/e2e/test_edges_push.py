"""`synth push` at the edges (issue 14): a Hub that accepts the connection and never answers, and a Hub whose
JSON reply lacks the fields huggingface_hub reads. The real CLI in a subprocess against the loopback Hub of
tests/support/fake_hub.py; each failure is one line, within a bounded time, and push.json is not written."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_push import REPO_ID, TOKEN, hub, push, run_dir  # noqa: F401 - shared fixtures
from tests.support.edges import one_line_error


@pytest.fixture()
def quick(monkeypatch):
    monkeypatch.setenv("SYNTH_HUB_TIMEOUT", "2")


@pytest.mark.parametrize("match", ["", "/commit/"], ids=["first-call", "commit"])
def test_silent_hub_stops_within_the_limit(hub, run_dir, quick, match):  # noqa: F811
    hub.stall_next(count=50, match=match)
    started = time.perf_counter()
    proc = push(str(run_dir), "--repo", REPO_ID)
    elapsed = time.perf_counter() - started
    line = one_line_error(proc, 3)
    assert "did not answer" in line and "within 2s" in line and "SYNTH_HUB_TIMEOUT" in line, line
    if match:
        assert "/commit/" in line and "pushing config 'triplets'" in line, line
    assert elapsed < 45, f"took {elapsed:.0f}s with a 2 s limit per call"
    assert TOKEN not in proc.stderr
    assert not (run_dir / "push.json").exists()


def test_reply_without_expected_keys_names_the_call(hub, run_dir, quick):  # noqa: F811
    hub.reply_next({}, count=5, match="/commit/")
    proc = push(str(run_dir), "--repo", REPO_ID)
    line = one_line_error(proc, 2)
    assert "unexpected reply" in line and "/commit/" in line and "missing key" in line, line
    assert not (run_dir / "push.json").exists()


def test_bad_timeout_setting_is_one_line(run_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SYNTH_HUB_TIMEOUT", "soon")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "SYNTH_HUB_TIMEOUT" in one_line_error(push(str(run_dir), "--repo", REPO_ID), 2)
