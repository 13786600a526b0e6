"""Shared fixtures. One embedding cache per test session, so the bundled model encodes each text once; the
expensive runs several files read (tests/support/runs.py) are done once per session too.

Markers: each test gets ``unit``, ``integration`` or ``e2e`` from its folder, and every e2e test is ``slow``
(a whole run through the CLI), so ``python -m pytest -m "not slow"`` is the fast loop: unit tests plus the
quick integration tests. Slow integration tests carry ``@pytest.mark.slow`` themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Two xdist workers share CI's two cores: the embedder (torch) and the bundled LLM (llama.cpp) both run OpenMP
# thread teams, whose idle threads spin by default and take the core the other process is waiting for. Idle
# threads that sleep change no number (the thread counts stay), and an LLM beside an embedding ran 31 -> 46
# tok/s with it (12 requests, this machine). Set before torch loads; the CLI subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from tests.support import schedule  # noqa: E402
from tests.support.runs import MAIN_RECIPE, QUICKSTART, RESA2_RECIPE, reusable_quickstart, run_synth

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE = REPO / "examples" / "scifact-mini"
_FOLDER_MARKS = {"unit": "unit", "integration": "integration", "e2e": "e2e"}
_SESSION_RUNS = {"session_resa2_run", "session_quickstart_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(item.path).resolve().relative_to(REPO / "tests").parts[0]
        mark = _FOLDER_MARKS.get(folder)
        if mark:
            item.add_marker(mark)
        # Whole runs are slow wherever they sit: every e2e test, and any test reading a session run.
        if mark == "e2e" or _SESSION_RUNS & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")
    schedule.order(items)  # xdist work units, heaviest first (tests/support/schedule.py)


def pytest_xdist_make_scheduler(config, log):
    return schedule.make_scheduler(config, log)  # one work unit per module, with the exceptions schedule.py names


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # Reuse CI's cache when set (README command 1 already embedded the example data there).
    env = os.environ.get("SYNTH_CACHE_DIR")
    if env:
        return Path(env)
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for all workers (synth's caches take concurrent writers)
        root = root.parent
    (root / "synth-cache").mkdir(parents=True, exist_ok=True)
    return root / "synth-cache"


@pytest.fixture(scope="session")
def synth_cli(cache_dir):
    """Run the real ``synth`` console entry point in a subprocess."""

    def run(*args: str, check: bool = False, timeout: int = 1800) -> subprocess.CompletedProcess:
        env = {**os.environ, "SYNTH_CACHE_DIR": str(cache_dir), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "synth", *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"synth {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    return run


def _once_per_run(tmp_path_factory, name: str, make) -> Path:
    """``make(out)`` once for the whole test run: under pytest-xdist every worker asks, the first one runs it
    under a file lock in the workers' common temp folder, the others wait and read the finished folder."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/popen-gwK -> pytest-N, shared by the workers of this run
    out = root / "session-runs" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "report.json").is_file():
            make(out)
    return out


@pytest.fixture(scope="session")
def session_resa2_run(cache_dir, tmp_path_factory) -> Path:
    """``synth run recipes/resa2.yaml`` on the bundled example, once per session. Read only: a test that
    writes into a run folder takes ``tests.support.runs.copy_run`` of it."""
    return _once_per_run(
        tmp_path_factory, "resa2", lambda out: run_synth(cache_dir, "run", str(RESA2_RECIPE), "--out", str(out))
    )


@pytest.fixture(scope="session")
def session_quickstart_run(cache_dir, tmp_path_factory) -> Path:
    """The main recipe (README command 1) as shipped, once per session: CI's ``runs/quickstart`` when it is a
    finished run of the current recipe and code, else a fresh run. Read only."""
    if reusable_quickstart(QUICKSTART, MAIN_RECIPE):
        return QUICKSTART
    return _once_per_run(
        tmp_path_factory, "quickstart", lambda out: run_synth(cache_dir, "run", str(MAIN_RECIPE), "--out", str(out))
    )


@pytest.fixture(scope="session")
def scifact_head(tmp_path_factory) -> Path:
    """SciFact's first 2,048 passages and every other train positive (2,340 passages; all 809 train queries and
    919 pairs): test_scifact's run embeds it, test_index_ann reads its first 2,048 rows from the same cache entry.
    Deterministic, so every worker's copy has the same texts and the same cache keys."""
    from tests.support.subsets import head_and_positives

    return head_and_positives(shared_dataset("scifact"), tmp_path_factory.mktemp("scifact-head"), 2048)


def shared_dataset(name: str) -> Path:
    """``../shared/data/NAME``, or a skip that names the missing path (pytest's -rs summary shows it)."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared datasets sit in ../shared/data beside the checkout)")
    return path
