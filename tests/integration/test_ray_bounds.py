"""The Ray engine's bounds that need no running cluster (issue 23): an unreachable or silent
``engine.address`` is one line within ``ray_start_timeout``, a temp folder too long for Ray's sockets and a
fractional ``num_cpus`` are one line each, before Ray starts; the Ray Data stages' blocking iterator ends
with one line once nothing arrives for ``ray_stall_timeout``. The bounds that need a cluster (infeasible
actors and shards, stalls, ``auto``, SIGTERM, a killed worker) are in tests/e2e/test_ray.py, on its one
cluster. Every driver runs in a subprocess with a timeout that fails with what it printed."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

import tests.support.ray_cluster  # noqa: F401  (before ray: the test cluster's environment, loopback only)
from synth.core.errors import ResumableFailure
from synth.engine.config import RayEngineConfig
from synth.engine.ray_waits import Stall, iterate_with_deadline
from tests.support.runs import REPO, RESA2_RECIPE, synth_env

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")

# Connects the engine to ``address`` and prints the one line it failed with (or "connected").
REACH = """
import sys
from synth.core.errors import UserError
from synth.core.errors import ResumableFailure
from synth.engine.config import RayEngineConfig
from synth.engine.ray_waits import Stall, iterate_with_deadline
from synth.engine.ray_engine import RayEngine

engine = RayEngine(RayEngineConfig(address=sys.argv[1]))
try:
    engine.ray()
    print("connected")
except UserError as e:
    print(f"{type(e).__name__}: {e}")
finally:
    engine.close()
"""


def reach(address: str, env: dict, timeout: float) -> str:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", REACH, address], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"connecting to {address} still waited after {timeout} s: {(e.stderr or b'')[-2000:]!r}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and lines, proc.stderr[-2000:]
    return lines[-1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_address_is_one_line_naming_it(tmp_path):
    address = f"127.0.0.1:{closed_port()}"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "synth", "run", str(RESA2_RECIPE), "--out", str(tmp_path / "out"),
             "--set", "engine.kind=ray", "--set", f"engine.address={address}"],
            capture_output=True, text=True, env=synth_env(tmp_path / "cache"), cwd=REPO, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"a run against a closed port still waited after 300 s: {(e.stderr or b'')[-2000:]!r}")
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("error: ray: cannot reach the cluster at engine.address") and address in last, last


@pytest.mark.slow
def test_a_silent_address_gives_up_after_the_start_timeout():
    # something listens but never answers as a Ray cluster: Ray's own connect would retry without end
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        address = "127.0.0.1:%d" % server.getsockname()[1]
        env = {**synth_env(REPO / "unused"), "SYNTH_RAY_START_TIMEOUT": "5"}
        line = reach(address, env, timeout=240)
    assert line.startswith("ResumableFailure: ray: no answer from the cluster at engine.address"), line
    assert address in line and "SYNTH_RAY_START_TIMEOUT" in line, line


def test_a_temp_folder_too_long_for_rays_sockets_is_one_line_before_ray_starts(tmp_path):
    long_folder = tmp_path / ("t" * 60)
    long_folder.mkdir()
    env = {**synth_env(tmp_path / "cache"), "RAY_TMPDIR": str(long_folder)}
    line = reach("local", env, timeout=240)
    assert line.startswith("UserError: RAY_TMPDIR"), line
    assert "too long" in line and "set RAY_TMPDIR to a shorter folder" in line, line


def test_num_cpus_must_be_whole():
    assert RayEngineConfig(num_cpus=3).num_cpus == 3
    with pytest.raises(ValidationError, match="2.5 is not a whole number"):
        RayEngineConfig(num_cpus=2.5)


def test_a_fractional_num_cpus_is_one_line_from_the_cli(synth_cli):
    proc = synth_cli(
        "validate", str(RESA2_RECIPE), "--set", "engine.kind=ray", "--set", "engine.num_cpus=1.5", timeout=300
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "engine.ray.num_cpus" in lines[0] and "whole number" in lines[0], proc.stderr


def test_an_iterator_that_stops_yielding_ends_the_stage_after_the_stall_timeout(monkeypatch):
    # what the Ray Data stages (embed, vllm) wait on: a blocking iterator, pulled in a thread with a deadline
    monkeypatch.setenv("SYNTH_RAY_STALL_TIMEOUT", "2")
    release = threading.Event()

    def chunks():
        yield 1
        release.wait(600)  # a restarted actor that never gets its chunk back
        yield 2

    stall = Stall("embed", "chunks", 2, lambda: "a Ray Data pool of 2 EmbedActor actors")
    got = []
    try:
        with pytest.raises(ResumableFailure) as stalled:
            for chunk in iterate_with_deadline(chunks(), stall, "embed"):
                got.append(chunk)
                stall.progress()
    finally:
        release.set()
    assert got == [1]
    line = str(stalled.value)
    assert line.startswith("ray: nothing finished for ") and "during embed (1 of 2 chunks done; a Ray Data pool" in line
    assert "SYNTH_RAY_STALL_TIMEOUT=2 s" in line and "rerun to resume" in line, line


def test_an_iterator_error_arrives_in_the_driver_thread():
    def broken():
        yield 1
        raise ConnectionError("the GCS went away")

    stall = Stall("embed", "chunks", 2)
    with pytest.raises(ConnectionError, match="the GCS went away"):
        list(iterate_with_deadline(broken(), stall, "embed"))
