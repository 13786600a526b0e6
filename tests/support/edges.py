"""Assertions shared by the edge-case tests (issue 14): a user error is one line on stderr with the
expected exit code and no traceback; nothing half-written is left; no file that synth did not write
is deleted."""

from __future__ import annotations

import hashlib
from pathlib import Path


LOG_LINE = ("DEBUG ", "INFO ", "WARNING ", " ")  # synth's log lines (and their wrapped parts) share stderr


def one_line_error(proc, code: int = 2) -> str:
    """The single non-empty stderr line of a failed ``synth`` call besides its log lines (asserts exit code,
    one line, no traceback)."""
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(LOG_LINE)]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path → sha256), to prove later that none was deleted or changed."""
    root = Path(root)
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_kept(before: dict[str, str], root: Path) -> None:
    """Every file of ``before`` is still under ``root`` with the same bytes."""
    after = snapshot(root)
    lost = [k for k, v in before.items() if after.get(k) != v]
    assert not lost, f"files deleted or changed: {lost[:10]}"


def no_partials(parent: Path) -> None:
    """No temporary output folder (``.NAME.partial-PID`` / ``.NAME.old-PID``) is left in ``parent``."""
    left = [p.name for p in Path(parent).iterdir() if ".partial-" in p.name or ".old-" in p.name]
    assert not left, f"half-written leftovers: {left}"
