"""Kill a CLI run mid-stage: start it, wait until its SQLite verdict store holds a row, SIGKILL it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path


def store_rows(cache: Path, pattern: str) -> int:
    """Rows in every verdict store under ``cache`` matching ``pattern`` (a glob); 0 while one is locked."""
    total = 0
    for db in cache.glob(pattern):
        try:
            with sqlite3.connect(str(db), timeout=1) as con:
                total += con.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        except sqlite3.Error:
            pass
    return total


def kill_once_stored(args: list[str], *, cwd: Path, env: dict, cache: Path, pattern: str, timeout: float) -> int:
    """Run ``args``; SIGKILL it as soon as a verdict is stored. Returns the rows seen at the kill."""
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, rows = time.time() + timeout, 0
    try:
        while time.time() < deadline and proc.poll() is None:
            rows = store_rows(cache, pattern)
            if rows:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert rows > 0, f"{pattern}: the verdict store never got a row"
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (exit {proc.returncode})"
    return rows
