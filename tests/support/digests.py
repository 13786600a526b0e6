"""Digests of a run's published files, compared against tests/support/digests.json by tests/e2e/test_digests.py.

A digest is sha256 over (relative path, sha256 of the bytes) of every file under ``dataset/``, in sorted path
order, plus ``README.md`` (the dataset card) when ``card`` is set, without its "Made with synth ..." line: that
line names the installed library versions (sentence-transformers 6.2 here, 6.3 in a fresh CI venv), which are
not the run's output. report.json and report.html are left out: they hold timings and dates, so two identical
runs never match byte for byte there.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

STORED = Path(__file__).with_name("digests.json")
ENVIRONMENT_LINE = b"Made with synth "  # the card's last line: python, platform and library versions


def run_digest(root: Path, card: bool = False) -> str:
    files = sorted(p for p in (root / "dataset").rglob("*") if p.is_file())
    if card:
        files.append(root / "README.md")
    h = hashlib.sha256()
    for p in files:
        data = p.read_bytes()
        if p.name == "README.md":
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(ENVIRONMENT_LINE))
        h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def stored_digest(name: str) -> str:
    """The digest recorded for ``name`` ("resa2", "main") in digests.json."""
    return json.loads(STORED.read_text(encoding="utf-8"))[name]["digest"]


if __name__ == "__main__":  # python -m tests.support.digests OUT [--card]: print a run's digest (to refresh the file)
    import sys

    print(run_digest(Path(sys.argv[1]), card="--card" in sys.argv[2:]))
