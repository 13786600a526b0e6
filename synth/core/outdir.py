"""Output-folder safety, shared by every command that writes a folder (run, relabel, fn-probe,
compare, train-judge) or a result file (eval --out).

A folder is written into a hidden sibling (``.NAME.partial-PID``) and renamed onto ``--out`` only
when complete. Before the rename a marker file (``.synth-run``: a random run id and the command) is
put inside it, and an existing ``--out`` is replaced only when it carries that marker: a folder that
merely holds a ``report.json`` may be the user's, and replacing it would delete their files. An
empty folder is free to use.

Temp folders left by a killed run are removed by the next run writing the same ``--out`` once their
PID is gone; a live process's folder is never touched. Temp names are shortened for ``--out`` names
near the 255-byte limit, so the prefix and suffix never make a valid name too long.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

from synth.core.errors import UserError
from synth.core.files import atomic_write_json, swap_dir

MARKER = ".synth-run"
_MAX_STEM = 200  # + "." + ".partial-" + a PID stays well under NAME_MAX (255)
_live: set[Path] = set()  # temp folders of this process, removed by discard_all() on an interrupt


def _stem(out: Path) -> str:
    name = out.name
    if len(name.encode()) <= _MAX_STEM:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return name.encode()[: _MAX_STEM - 13].decode("utf-8", "ignore") + "~" + digest


def temp_name(out: Path, kind: str, pid: int | None = None) -> Path:
    """``.NAME.partial-PID`` or ``.NAME.old-PID`` beside ``out`` (NAME shortened when long)."""
    return out.with_name(f".{_stem(out)}.{kind}-{os.getpid() if pid is None else pid}")


def is_synth_output(folder: Path) -> bool:
    """True when ``folder`` carries the marker synth writes into every folder it publishes."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("run_id"), str)


def write_marker(folder: Path, command: str) -> None:
    """Claim ``folder`` for synth: ``.synth-run`` with a fresh run id (atomically)."""
    record = {
        "run_id": uuid.uuid4().hex,
        "command": command,
        "pid": os.getpid(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(folder / MARKER, record)


def check_replaceable(out: Path, flag: str = "--out") -> None:
    """A UserError unless ``out`` is absent, an empty folder, or a folder synth wrote; also when its
    parent is not a writable folder. Cheap: runs before any work."""
    parent = out.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{flag} {out}: the parent {parent} is not a folder")
    if out.is_symlink() and not out.exists():
        raise UserError(f"{flag} {out}: a broken symbolic link; remove it or choose another path")
    if out.exists():
        if not out.is_dir():
            raise UserError(f"{flag} {out}: exists and is not a folder; choose another path")
        if any(out.iterdir()) and not is_synth_output(out):
            raise UserError(
                f"{flag} {out}: the folder exists and is not a synth output (no {MARKER}); "
                "choose another path or empty it"
            )
    existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
    if existing is not None and existing.is_dir() and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: {existing} is not writable")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours from an earlier process with the same PID: this process has made none yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def clean_stale(out: Path) -> list[Path]:
    """Remove temp folders of ``out`` whose process is gone. A dead run's ``.old`` folder is the previous
    output when the run died between its two renames: it is put back when ``out`` is missing."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(_stem(out))}\.(partial|old)-(\d+)$")
    try:
        siblings = list(out.parent.iterdir())
    except OSError:
        return removed
    for path in sorted(siblings, key=lambda p: p.name):
        m = pattern.match(path.name)
        if not m or _pid_alive(int(m.group(2))):
            continue
        if m.group(1) == "old" and not out.exists() and path.is_dir():
            os.replace(path, out)
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def prepare(out: Path, command: str, flag: str = "--out") -> Path:
    """Check ``out``, clear stale leftovers, and return a fresh, marked temp folder beside it."""
    out = Path(out)
    check_replaceable(out, flag)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = temp_name(out, "partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _live.add(tmp)
    try:
        write_marker(tmp, command)
    except BaseException as e:  # a full disk or a file-size limit at the very start: leave no empty folder
        discard(tmp)
        if isinstance(e, OSError) and e.filename is None:  # a failed write names no file: name the output
            e.filename = str(out)
        raise
    return tmp


def publish(tmp: Path, out: Path, command: str) -> None:
    """Rename the finished ``tmp`` onto ``out``; the previous output (checked again: it may have
    changed while this run worked) goes away only after the new one is in place."""
    out = Path(out)
    if not (tmp / MARKER).exists():  # a writer that replaced the folder wholesale dropped the marker
        write_marker(tmp, command)
    check_replaceable(out)
    swap_dir(tmp, out, aside=temp_name(out, "old"))  # the name clean_stale recovers from after a crash
    _live.discard(tmp)


def discard(tmp: Path) -> None:
    """Remove an unfinished temp folder (on any failure or interrupt)."""
    shutil.rmtree(tmp, ignore_errors=True)
    _live.discard(tmp)


def discard_all() -> None:
    """Remove every temp folder this process still holds (the CLI's interrupt path)."""
    for tmp in list(_live):
        discard(tmp)


def claim_in_place(out: Path, command: str, flag: str = "--out") -> None:
    """For a folder written in place and resumed (``compare``): refuse a foreign folder, then mark it."""
    out = Path(out)
    check_replaceable(out, flag)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).exists():
        write_marker(out, command)


def check_result_file(path: Path, flag: str = "--out") -> None:
    """A result file (``eval --out``) may replace only a file synth wrote: a JSON object with a
    ``synth`` key; a folder or any other file is refused."""
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the parent {path.parent} is not a folder")
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder; expected a file name for the result JSON")
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not (isinstance(data, dict) and isinstance(data.get("synth"), dict)):
            raise UserError(f"{flag} {path}: the file exists and is not a synth result; choose another path")
