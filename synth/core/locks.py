"""Waiting on locks that other synth processes hold, with a deadline and a word about it.

A run that finds a cache or output locked by another process must neither wait for ever nor wait in
silence: after ``SAY_AFTER_S`` it logs what it waits for (and the holder's pid when known), and at
``SYNTH_LOCK_TIMEOUT`` seconds it stops with one line. Two kinds of lock are covered:

- ``file_lock``: an exclusive ``flock`` on a ``NAME.lock`` file; the holder writes its pid into the
  file, so a waiting process can name it.
- ``sqlite_busy``: SQLite's own locks. SQLite's busy handler waits silently, so connections get a
  short busy timeout (``SQLITE_BUSY_SLICE_S``) and this loop retries in slices, logging and keeping
  the deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, TypeVar

from synth.core.errors import ResumableFailure
from synth.core.limits import LIMITS, limit

log = logging.getLogger("synth.lock")

SAY_AFTER_S = 3.0  # a wait longer than this is logged once
POLL_S = 0.1  # how often a non-blocking flock is tried again
SQLITE_BUSY_SLICE_S = 2.0  # SQLite's silent busy wait per try; ``sqlite_busy`` loops over these

T = TypeVar("T")


def _lock_failure(what: str, waited: float, holder: str) -> ResumableFailure:
    env = LIMITS["lock_timeout"].env
    return ResumableFailure(
        f"{what}: still locked by another synth process{holder} after {waited:g}s; wait for it to finish "
        f"or stop it, then rerun ({env}={limit('lock_timeout'):g} sets how long to wait)"
    )


def _holder(f) -> str:
    """`` (pid N)`` from the lock file's content, or '' when it names no pid."""
    try:
        f.seek(0)
        pid = f.read(32).strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


@contextlib.contextmanager
def file_lock(lock_path: str | Path, what: str):
    """Hold an exclusive ``flock`` on ``lock_path`` for the block; ``what`` names the guarded thing in
    messages. Waits at most ``SYNTH_LOCK_TIMEOUT`` seconds, then raises ``ResumableFailure``."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (callers accept the race there)
        yield
        return
    with open(lock_path, "a+") as f:
        bound = limit("lock_timeout")
        start = time.monotonic()
        said = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited >= bound:
                    raise _lock_failure(what, round(waited, 1), _holder(f)) from None
                if not said and waited >= SAY_AFTER_S:
                    said = True
                    log.warning(
                        "waiting for the lock on %s held by another synth process%s (up to %gs, %s)",
                        what,
                        _holder(f),
                        bound,
                        LIMITS["lock_timeout"].env,
                    )
                time.sleep(min(POLL_S, max(bound - waited, 0.0)))
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                f.truncate(0)
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def is_busy(e: BaseException) -> bool:
    """SQLite's "database is locked" / "database is busy" (SQLITE_BUSY, SQLITE_LOCKED)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


def sqlite_busy(fn: Callable[[], T], what: str) -> T:
    """``fn()``, tried again while SQLite says the database is locked by another process, up to
    ``SYNTH_LOCK_TIMEOUT`` seconds in all; ``fn`` must be safe to repeat (one statement or transaction)."""
    bound = limit("lock_timeout")
    start = time.monotonic()
    said = False
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if not is_busy(e):
                raise
            waited = time.monotonic() - start
            if waited >= bound:
                raise _lock_failure(what, round(waited, 1), "") from None
            if not said and waited + SQLITE_BUSY_SLICE_S >= SAY_AFTER_S:
                said = True
                log.warning(
                    "waiting for the lock on %s held by another synth process (up to %gs, %s)",
                    what,
                    bound,
                    LIMITS["lock_timeout"].env,
                )
