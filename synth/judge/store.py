"""Where verdicts live: a SQLite store of every stage's verdict, and the final verdicts as Parquet.

``VerdictStore`` keys a row by (query_id, doc_id, fingerprint): a judge's fingerprint covers its
model, prompt and thresholds, so a rerun reuses exactly the verdicts the same judge would give again
and re-judges only when something that changes decisions changed. Rows are committed per ``put``
(the cascade calls it per chunk), in WAL mode, so a killed run keeps everything but the chunk in flight.
A damaged database file is moved aside on open and a fresh store started, with a warning
(``synth.core.files.open_sqlite``).
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

from synth.core.errors import InputError
from synth.core.files import atomic_file, open_sqlite
from synth.core.locks import SQLITE_BUSY_SLICE_S, sqlite_busy
from synth.judge.base import VERDICTS, Judgement, StageVerdict

Key = tuple[str, str]  # (query_id, doc_id)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    query_id TEXT NOT NULL, doc_id TEXT NOT NULL, fingerprint TEXT NOT NULL,
    stage TEXT NOT NULL, kind TEXT NOT NULL, verdict TEXT NOT NULL, score REAL,
    model TEXT NOT NULL, prompt_sha256 TEXT NOT NULL, detail TEXT NOT NULL, failed INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, query_id, doc_id)
) WITHOUT ROWID;
"""


def _setup(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    db.commit()


class VerdictStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # checked on open: a damaged file is moved aside and a fresh store started (synth.core.files)
        # a short busy timeout: sqlite_busy retries in slices, so a held lock is logged and bounded
        self._db = open_sqlite(self.path, _setup, check_same_thread=False, timeout=SQLITE_BUSY_SLICE_S)

    def get(self, fingerprint: str, keys: Iterable[Key]) -> dict[Key, StageVerdict]:
        wanted = list(dict.fromkeys(keys))
        out: dict[Key, StageVerdict] = {}
        with self._lock:
            # SQLite limits bound parameters; look up per query id, in chunks of query ids
            by_q: dict[str, set[str]] = {}
            for q, d in wanted:
                by_q.setdefault(q, set()).add(d)
            qids = list(by_q)
            for s in range(0, len(qids), 500):
                part = qids[s : s + 500]
                rows = self._db.execute(
                    "SELECT query_id, doc_id, verdict, score, model, prompt_sha256, detail, failed FROM verdicts "
                    f"WHERE fingerprint = ? AND query_id IN ({','.join('?' * len(part))})",
                    [fingerprint, *part],
                )
                for q, d, v, score, model, sha, detail, failed in rows:
                    if d in by_q[q]:
                        out[(q, d)] = StageVerdict(
                            v, float("nan") if score is None else score, model, sha, detail, bool(failed)
                        )
        return out

    def put(self, fingerprint: str, stage: str, kind: str, items: Sequence[tuple[Key, StageVerdict]]) -> None:
        now = time.time()
        rows = [
            (
                q,
                d,
                fingerprint,
                stage,
                kind,
                v.verdict,
                None if math.isnan(v.score) else v.score,
                v.model,
                v.prompt_sha256,
                v.detail,
                int(v.failed),
                now,
            )
            for (q, d), v in items
        ]

        def write() -> None:  # INSERT OR REPLACE: safe to repeat after a busy failure
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.commit()

        with self._lock:
            sqlite_busy(write, str(self.path))

    def count(self, fingerprint: str | None = None) -> int:
        with self._lock:
            if fingerprint is None:
                return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM verdicts WHERE fingerprint = ?", (fingerprint,)).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _json_safe(stages: list[dict]) -> str:
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in s.items()} for s in stages]
    return json.dumps(clean, ensure_ascii=False, sort_keys=True)


def write_verdicts_parquet(judgements: Sequence[Judgement], path: str | Path) -> Path:
    """One row per (query_id, doc_id): the final verdict, the deciding stage ("" when none decided), the
    last stage's score / model / prompt hash, and every stage's record as JSON. Atomic (temp + rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict[Key, Judgement] = {}
    for j in judgements:
        seen.setdefault((j.query_id, j.doc_id), j)
    js = list(seen.values())
    table = pa.table(
        {
            "query_id": pa.array([j.query_id for j in js], pa.string()),
            "doc_id": pa.array([j.doc_id for j in js], pa.string()),
            "stage": pa.array([j.stage for j in js], pa.string()),
            "verdict": pa.array([j.verdict for j in js], pa.string()),
            "score": pa.array([None if math.isnan(j.score) else float(j.score) for j in js], pa.float64()),
            "model": pa.array([j.model for j in js], pa.string()),
            "prompt_sha256": pa.array(
                [j.stages[-1].get("prompt_sha256", "") if j.stages else "" for j in js], pa.string()
            ),
            "stages_json": pa.array([_json_safe(j.stages) for j in js], pa.string()),
        }
    )
    with atomic_file(path) as f:
        pq.write_table(table, f)
    return path


_VERDICT_COLUMNS = ("query_id", "doc_id", "stage", "verdict", "stages_json")


def read_verdicts_parquet(path: str | Path) -> list[Judgement]:
    """The judgements ``write_verdicts_parquet`` wrote. A file that is not one (truncated, another table,
    a verdict synth never gives) is an ``InputError`` naming it: ``--reapply`` reads what a user hands it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        t = pq.read_table(str(path), columns=list(_VERDICT_COLUMNS)).to_pydict()
    except (pa.ArrowException, OSError, ValueError) as e:  # ArrowInvalid: not Parquet; KeyError-like: no column
        detail = " ".join(str(e).split())[:160]
        raise InputError(str(path), f"not a readable verdicts table ({detail}); run relabel again") from None
    out = []
    for row, (q, d, stage, verdict, stages) in enumerate(zip(*(t[c] for c in _VERDICT_COLUMNS)), start=1):
        where = f"{path}: row {row}"
        if not all(isinstance(x, str) for x in (q, d, stage, verdict, stages)):
            raise InputError(where, "an empty or non-text value in a verdict column; run relabel again")
        if verdict not in VERDICTS:
            raise InputError(where, f"verdict {verdict[:40]!r} is not one of {', '.join(VERDICTS)}")
        try:
            parsed = json.loads(stages)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(s, dict) for s in parsed):
            raise InputError(where, "stages_json is not a list of stage records; run relabel again")
        records = [{k: (float("nan") if k == "score" and v is None else v) for k, v in s.items()} for s in parsed]
        out.append(Judgement(q, d, verdict, stage, records))
    return out
