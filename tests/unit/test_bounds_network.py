"""Bounds on what a server or another process can make synth do (issue 23, items 3 and 5): reply sizes,
Retry-After, Hub deadlines, lock waits, the secret scrubber's running time and credentials in base_url.
Every test uses crafted input against the real component: real HTTP servers on 127.0.0.1, a real second
process holding the lock."""

from __future__ import annotations

import json
import logging
import socketserver
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from datasets import Dataset, DatasetDict

from synth.core.errors import ResumableFailure, UserError
from synth.core.yamlio import validate
from synth.llm.base import ChatRequest
from synth.llm.batch import OpenAIBatchBackend
from synth.llm.cache import RequestCache
from synth.llm.config import BackendConfig, OpenAIBatchConfig, OpenAIConfig
from synth.llm.openai import OpenAIBackend
from synth.publish.hub import push_run
from synth.publish.secrets import REDACTED, scrub_text
from tests.support.fake_hub import FakeHub
from tests.support.fake_openai import FakeOpenAI

MiB = 1 << 20
TOKEN = "hf_test_token"
REQUEST = ChatRequest.make([("user", "hello")], {"max_tokens": 8}, None, "plain")


# ---- a raw HTTP server: replies the fake servers would never send -------------------------------------------
class RawServer:
    """Answers every request on 127.0.0.1 with ``reply(wfile)``, from a thread per connection."""

    def __init__(self, reply):
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                head = b""
                while b"\r\n\r\n" not in head:
                    piece = self.rfile.readline()
                    if not piece:
                        return
                    head += piece
                length = next(
                    (int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")),
                    0,
                )
                self.rfile.read(length)
                outer.requests += 1
                try:
                    reply(self.wfile)
                except OSError:  # the client hung up, as it should
                    pass

        self.requests = 0
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def claims_400_mb(wfile) -> None:
    wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400000000\r\n\r\n")
    wfile.write(b"{" + b" " * 65536)


def streams_5_mb_chunked(wfile) -> None:  # no Content-Length: only counting finds out
    wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    block = b" " * 65536
    for _ in range(80):
        wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
    wfile.write(b"0\r\n\r\n")


# ---- the secret scrubber -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [200_000, 2_000_000])
@pytest.mark.parametrize("shape", ["a", "hf_{}_", "://{}", "sk-{}é", "x://a" * 3 + "{}"])
def test_scrubber_is_linear_on_long_adversarial_names(shape, size):
    text = shape.format("a" * size) if "{}" in shape else shape * size
    started = time.perf_counter()
    scrub_text(text)
    assert time.perf_counter() - started < 5, f"scrubbing {len(text):,} chars of {shape!r} took too long"


def test_scrubber_still_hides_url_credentials_and_key_shapes():
    text = "see https://bob:hunter2@example.com/v1, HTTP://tok@h and hf_" + "A" * 30
    clean = scrub_text(text)
    assert "hunter2" not in clean and "tok@" not in clean and "hf_AAAA" not in clean
    assert f"https://{REDACTED}@example.com/v1" in clean and f"HTTP://{REDACTED}@h" in clean


# ---- LLM replies: size ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply", [claims_400_mb, streams_5_mb_chunked])
def test_llm_reply_over_the_bound_is_one_line(monkeypatch, reply):
    monkeypatch.setenv("SYNTH_MAX_REPLY_BYTES", str(MiB))
    with RawServer(reply) as server:
        backend = OpenAIBackend(OpenAIConfig(base_url=server.url, model="m", api_key_env=None, max_retries=0))
        started = time.perf_counter()
        with pytest.raises(UserError) as err:
            backend.generate([REQUEST], lambda i, r: None)
    line = str(err.value)
    assert "SYNTH_MAX_REPLY_BYTES" in line and "1,048,576" in line and "/chat/completions" in line
    assert "\n" not in line and time.perf_counter() - started < 60


@pytest.mark.parametrize("reply", [claims_400_mb, streams_5_mb_chunked])
def test_batch_api_reply_over_the_bound_is_one_line(monkeypatch, tmp_path, reply):
    monkeypatch.setenv("SYNTH_MAX_REPLY_BYTES", str(MiB))
    with RawServer(reply) as server:
        cfg = OpenAIBatchConfig(base_url=server.url, model="m", api_key_env=None, max_retries=0, poll_s=0.1)
        backend = OpenAIBatchBackend(cfg)
        backend.state_dir = tmp_path
        with pytest.raises(UserError) as err:
            backend.generate([REQUEST], lambda i, r: None)
    assert "SYNTH_MAX_REPLY_BYTES" in str(err.value) and "\n" not in str(err.value)


# ---- LLM replies: Retry-After ----------------------------------------------------------------------------------
def test_retry_after_beyond_the_bound_stops_at_once_with_one_line():
    with FakeOpenAI() as server:
        server.fail_next(1, 429, retry_after=100000)
        backend = OpenAIBackend(OpenAIConfig(base_url=server.url, model="fake-model", api_key_env=None))
        started = time.perf_counter()
        with pytest.raises(ResumableFailure) as err:
            backend.generate([REQUEST], lambda i, r: None)
    line = str(err.value)
    assert "100,000s" in line and "SYNTH_MAX_RETRY_AFTER=120" in line and "rerun" in line
    assert time.perf_counter() - started < 60


def test_a_long_retry_after_within_the_bound_is_waited_for_and_said(caplog):
    answers = []
    with FakeOpenAI() as server, caplog.at_level(logging.INFO, logger="synth.llm.openai"):
        server.fail_next(1, 429, retry_after=5.5)
        backend = OpenAIBackend(OpenAIConfig(base_url=server.url, model="fake-model", api_key_env=None))
        backend.generate([REQUEST], lambda i, r: answers.append(r))
    assert answers and answers[0].error is None
    assert any("waiting" in r.message and "Retry-After" in r.message for r in caplog.records), caplog.text


# ---- credentials in base_url ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["openai", "openai-batch"])
def test_base_url_with_credentials_is_refused_with_the_password_masked(kind):
    raw = {"kind": kind, "model": "m", "base_url": "http://bob:hunter2@127.0.0.1:8000/v1"}
    with pytest.raises(UserError) as err:
        validate(BackendConfig, raw, "recipe.yaml")
    line = str(err.value)
    assert "hunter2" not in line and "http://bob:***@127.0.0.1:8000/v1" in line and "api_key_env" in line


def test_base_url_with_a_lone_token_as_user_is_masked_whole():
    with pytest.raises(UserError) as err:
        validate(BackendConfig, {"kind": "openai", "model": "m", "base_url": "https://sk-abc123@h/v1"}, "r")
    assert "sk-abc123" not in str(err.value) and "https://***@h/v1" in str(err.value)


# ---- the Hub: deadline, size, SYNTH_HUB_TIMEOUT ----------------------------------------------------------------
@pytest.fixture()
def run_dir(tmp_path):
    out = tmp_path / "run"
    DatasetDict({"triplets": Dataset.from_dict({"anchor": ["a"], "positive": ["p"], "negative": ["n"]})}).save_to_disk(
        str(out / "dataset")
    )
    (out / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# test\n")
    (out / "report.json").write_text(json.dumps({"seed": 0}))
    return out


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    with FakeHub(tokens=(TOKEN,)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", server.endpoint)  # read at import
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
        yield server


@pytest.mark.parametrize("body_only", [False, True])
def test_a_trickling_hub_fails_at_the_deadline(hub, run_dir, monkeypatch, body_only):
    monkeypatch.setenv("SYNTH_HUB_TIMEOUT", "1")
    hub.trickle_next(0.2, match="/api/whoami-v2", body_only=body_only)  # never 1 s silent, never done
    started = time.perf_counter()
    with pytest.raises(ResumableFailure) as err:
        push_run(run_dir, "tester/bounds")
    took = time.perf_counter() - started
    line = str(err.value)
    assert "did not answer GET /api/whoami-v2 within 1s" in line and "SYNTH_HUB_TIMEOUT" in line, line
    assert took < 30, f"a 1 s deadline took {took:.0f}s"
    assert TOKEN not in line and not (run_dir / "push.json").exists()


def test_a_hub_reply_over_the_bound_is_one_line(hub, run_dir, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_REPLY_BYTES", str(MiB))
    hub.huge_next(5 * MiB, match="/api/whoami-v2")
    with pytest.raises(UserError) as err:
        push_run(run_dir, "tester/bounds")
    line = str(err.value)
    assert "SYNTH_MAX_REPLY_BYTES" in line and "GET /api/whoami-v2" in line and "no config reached" in line, line


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-3", "soon"])
def test_hub_timeout_that_is_not_a_finite_positive_number_is_one_line(run_dir, value):
    env = {**__import__("os").environ, "SYNTH_HUB_TIMEOUT": value, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "push", str(run_dir), "--repo", "tester/bounds"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "SYNTH_HUB_TIMEOUT" in lines[0] and "Traceback" not in proc.stderr


# ---- locks held by another process --------------------------------------------------------------------------
HOLD_FLOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write("4242"); f.flush()
print("locked", flush=True)
time.sleep(120)
"""
HOLD_SQLITE = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
db.execute("INSERT OR REPLACE INTO responses VALUES ('held', '{}', 'm', 0)")
print("locked", flush=True)
time.sleep(120)
"""


class Holder:
    """A second process that holds a lock until the test ends."""

    def __init__(self, script: str, path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), str(path)], stdout=subprocess.PIPE, text=True
        )

    def __enter__(self):
        line = [None]
        reader = threading.Thread(target=lambda: line.__setitem__(0, self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(60)
        assert line[0] == "locked\n", "the lock holder did not start within 60 s"
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(timeout=60)


def test_a_held_cache_lock_is_said_and_ends_at_the_deadline(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SYNTH_LOCK_TIMEOUT", "4")
    path = tmp_path / "llm" / "requests.sqlite"
    path.parent.mkdir()
    with Holder(HOLD_FLOCK, f"{path}.lock"), caplog.at_level(logging.WARNING, logger="synth.lock"):
        started = time.perf_counter()
        with pytest.raises(ResumableFailure) as err:
            RequestCache(path)
        took = time.perf_counter() - started
    line = str(err.value)
    assert str(path) in line and "pid 4242" in line and "SYNTH_LOCK_TIMEOUT=4" in line, line
    assert 3.5 < took < 60
    assert any("waiting for the lock" in r.message and "pid 4242" in r.message for r in caplog.records), caplog.text
    RequestCache(path).close()  # released: opens at once


def test_a_held_sqlite_write_lock_ends_at_the_deadline(tmp_path, monkeypatch):
    from synth.llm.base import ChatResponse

    monkeypatch.setenv("SYNTH_LOCK_TIMEOUT", "3")
    cache = RequestCache(tmp_path / "requests.sqlite")
    with Holder(HOLD_SQLITE, cache.path):
        started = time.perf_counter()
        with pytest.raises(ResumableFailure) as err:
            cache.put("k", ChatResponse("text", finish_reason="stop", model="m"))
        assert time.perf_counter() - started < 60
    assert str(cache.path) in str(err.value) and "SYNTH_LOCK_TIMEOUT" in str(err.value)
    cache.put("k", ChatResponse("text", finish_reason="stop", model="m"))  # released: writes at once
    assert len(cache) == 1 and isinstance(cache._db, sqlite3.Connection)
    cache.close()
