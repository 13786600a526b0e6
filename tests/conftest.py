"""Shared fixtures. One embedding cache per test session, so the bundled model encodes each text once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
EXAMPLE = REPO / "examples" / "scifact-mini"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # Reuse CI's cache when set (README command 1 already embedded the example data there).
    env = os.environ.get("SYNTH_CACHE_DIR")
    return Path(env) if env else tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="session")
def synth_cli(cache_dir):
    """Run the real ``synth`` console entry point in a subprocess."""

    def run(*args: str, check: bool = False, timeout: int = 1800) -> subprocess.CompletedProcess:
        env = {**os.environ, "SYNTH_CACHE_DIR": str(cache_dir), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([sys.executable, "-m", "synth", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=REPO)
        if check and proc.returncode != 0:
            raise AssertionError(f"synth {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    return run


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path
