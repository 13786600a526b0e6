"""The request cache: final responses keyed by the content hash of the full request.

SQLite in WAL mode, so several runs (processes) can share one cache directory and write at once.
Each response is committed as soon as it arrives, so a killed run loses no completed response.
Only final outcomes are stored (successes, and failures that a retry would repeat); transport
failures are not, so a resumed run retries them. A damaged database file is moved aside on open and
a fresh one started, with a warning (``synth.core.files.open_sqlite``). Requests and responses never carry secrets: the key
is computed from ``Backend.identity()`` (kind, base_url, model), never from headers.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from synth.core.files import cache_subdir, open_sqlite
from synth.core.locks import SQLITE_BUSY_SLICE_S, sqlite_busy
from synth.llm.base import ChatResponse

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a process kill
    db.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SLICE_S * 1000)}")  # sqlite_busy loops over slices
    db.execute(_SCHEMA)


class RequestCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # checked on open: a damaged file is moved aside and a fresh cache started (synth.core.files)
        self._db = open_sqlite(
            self.path, _setup, timeout=SQLITE_BUSY_SLICE_S, isolation_level=None, check_same_thread=False
        )

    @staticmethod
    def in_dir(cache_dir: str | Path) -> "RequestCache":
        return RequestCache(cache_subdir(cache_dir, "llm") / "requests.sqlite")

    def get_many(self, keys: list[str]) -> dict[str, ChatResponse]:
        found: dict[str, ChatResponse] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for key, text in self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk):
                    found[key] = ChatResponse.from_json(json.loads(text))
        return found

    def put(self, key: str, response: ChatResponse) -> None:
        if not response.final:
            return
        row = (key, json.dumps(response.to_json(), ensure_ascii=False), response.model, time.time())
        with self._lock:
            sqlite_busy(
                lambda: self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)", row), str(self.path)
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
