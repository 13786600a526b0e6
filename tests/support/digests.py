"""Digests of a run's published files, compared against tests/support/digests.json by tests/e2e/test_digests.py.

A digest is sha256 over (relative path, sha256 of the bytes) of every file under ``dataset/``, in sorted path
order, plus ``README.md`` (the dataset card) when ``card`` is set, without its "Made with synth ..." line: that
line names the installed library versions, which are not the run's output. report.json and report.html are left
out: they hold timings and dates, so two identical runs never match byte for byte there.

Two hashes that differ say nothing about why, so digests.json also keeps a *fingerprint* of each stored run:
a hash per file, per split a hash per column and a short hash per row, and a hash per card line. When a digest
differs, ``differences`` names what moved: the packages installed at other versions than the lock
(constraints.txt) pins, the files, and per split the columns and the rows (with the first moved row's values
now), so a reader can tell a dependency that moved the embeddings' last bits from a change in what was chosen.

The lock pins software, not the processor: torch's kernels for AVX2 and for AVX-512 sum in other orders, so the
embeddings' last bits, and every score after them, differ between the two (CI's machines have been both). Each
stored run is therefore kept per vector unit, as torch reports it (``torch.backends.cpu.get_cpu_capability()``:
"AVX2", "AVX512", ...), and a run is checked against the one stored for the unit it ran on: byte for byte there.
A unit with nothing stored fails and says how to store it; it never passes by default.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from pathlib import Path

STORED = Path(__file__).with_name("digests.json")
LOCK = Path(__file__).resolve().parents[2] / "constraints.txt"
ENVIRONMENT_LINE = b"Made with synth "  # the card's last line: python, platform and library versions
ROW_HASH_HEX = 8  # per row: enough to name the rows that moved, small enough to keep in the repository
SHOWN = 8  # rows (or lines) named in a message


def _files(root: Path, card: bool) -> list[Path]:
    files = sorted(p for p in (root / "dataset").rglob("*") if p.is_file())
    return files + [root / "README.md"] if card else files


def _card_lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines(keepends=True) if not line.startswith(ENVIRONMENT_LINE)]


def _bytes(p: Path) -> bytes:
    return b"".join(_card_lines(p)) if p.name == "README.md" else p.read_bytes()


def _sha(data: bytes, hex_chars: int = 64) -> str:
    return hashlib.sha256(data).hexdigest()[:hex_chars]


def run_digest(root: Path, card: bool = False) -> str:
    h = hashlib.sha256()
    for p in _files(root, card):
        h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.sha256(_bytes(p)).digest())
    return h.hexdigest()


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def _splits(root: Path) -> dict:
    """Per split of the run's DatasetDict: rows, a hash per column, a short hash per row."""
    from datasets import load_from_disk

    try:
        dd = load_from_disk(str(root / "dataset"))
    except Exception:  # a layout that is not a DatasetDict (jsonl formats): the file hashes say enough
        return {}
    out = {}
    for name, split in dd.items():
        rows = split.to_list()
        out[name] = {
            "n": len(rows),
            "columns": {c: _sha(_canonical([r[c] for r in rows]), 16) for c in split.column_names},
            "rows": " ".join(_sha(_canonical(r), ROW_HASH_HEX) for r in rows),
        }
    return out


def fingerprint(root: Path, card: bool = False) -> dict:
    """What digests.json keeps of a run, beyond its digest, to say later what moved."""
    out = {
        "digest": run_digest(root, card),
        "files": {str(p.relative_to(root)): _sha(_bytes(p), 16) for p in _files(root, card)},
        "splits": _splits(root),
    }
    if card:
        out["card_lines"] = " ".join(_sha(line, ROW_HASH_HEX) for line in _card_lines(root / "README.md"))
    return out


def vector_unit() -> str:
    """The CPU vector unit torch's kernels run on here ("AVX2", "AVX512", ...): what the stored runs are keyed by."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def stored(name: str, unit: str | None = None) -> dict | None:
    """The stored run ``name`` ("resa2", "main") for ``unit`` (this machine's when None); None when none is stored."""
    entry = json.loads(STORED.read_text(encoding="utf-8"))[name]
    run = entry["by_vector_unit"].get(unit or vector_unit())
    return None if run is None else {k: v for k, v in entry.items() if k != "by_vector_unit"} | run


def _nothing_stored(name: str) -> list[str]:
    units = ", ".join(sorted(json.loads(STORED.read_text(encoding="utf-8"))[name]["by_vector_unit"]))
    return [
        f"{name}: no run stored for this CPU's vector unit ({vector_unit()}; stored for: {units}). On a clean "
        f"checkout at the lock, store one as tests/support/digests.json says (--write {name})"
    ]


def lock_drift() -> list[str]:
    """Installed packages whose version differs from the one constraints.txt pins."""
    if not LOCK.exists():
        return [f"{LOCK.name} is missing"]
    out = []
    for line in LOCK.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
        if not m:
            continue
        name, pinned = m.groups()
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra that is not installed here (ray, the LLM wheel)
        if installed.split("+")[0] != pinned.split("+")[0]:
            out.append(f"{name} {installed} (the lock pins {pinned})")
    return out


def _moved(old: str, new: str) -> list[int]:
    a, b = old.split(), new.split()
    return [i for i in range(max(len(a), len(b))) if i >= len(a) or i >= len(b) or a[i] != b[i]]


def _shown(indices: list[int]) -> str:
    more = f", ... ({len(indices)} in all)" if len(indices) > SHOWN else ""
    return ", ".join(map(str, indices[:SHOWN])) + more


def differences(name: str, root: Path, card: bool = False, want: dict | None = None) -> list[str]:
    """Lines naming what differs between the run at ``root`` and the stored run ``name`` (or ``want``, a
    fingerprint); [] when nothing."""
    want = want or stored(name)
    if want is None:
        return _nothing_stored(name)
    now = fingerprint(root, card)
    if now["digest"] == want["digest"]:
        return []
    unit = f" for {want['vector_unit']}" if "vector_unit" in want else ""
    lines = [f"{name}: digest {now['digest'][:16]}, stored {want['digest'][:16]}{unit} ({want.get('recipe', '?')})"]
    drift = lock_drift()
    lines.append(
        "packages off the lock: " + "; ".join(drift) if drift else "every installed package is at the lock's version"
    )
    old_files, new_files = want.get("files", {}), now["files"]
    for path in sorted(set(old_files) | set(new_files)):
        if old_files.get(path) != new_files.get(path):
            state = "missing now" if path not in new_files else "new" if path not in old_files else "differs"
            lines.append(f"file {path}: {state}")
    old_splits, new_splits = want.get("splits", {}), now["splits"]
    for split in sorted(set(old_splits) | set(new_splits)):
        a, b = old_splits.get(split), new_splits.get(split)
        if a is None or b is None:
            lines.append(f"split {split}: {'new' if a is None else 'missing now'}")
            continue
        columns = [
            c for c in sorted(set(a["columns"]) | set(b["columns"])) if a["columns"].get(c) != b["columns"].get(c)
        ]
        rows = _moved(a["rows"], b["rows"])
        if not rows and not columns:
            continue
        lines.append(
            f"split {split}: {len(rows)} of {b['n']} rows differ (stored {a['n']}): rows {_shown(rows) or '-'}; "
            f"columns {', '.join(columns) or '-'}"
        )
        if rows and rows[0] < b["n"]:
            from datasets import load_from_disk

            row = load_from_disk(str(root / "dataset"))[split][rows[0]]
            shown = {c: row[c] for c in columns if c in row} or row
            lines.append(f"  row {rows[0]} now: {json.dumps(shown, ensure_ascii=False)[:400]}")
    if card and "card_lines" in want:
        moved = _moved(want["card_lines"], now["card_lines"])
        if moved:
            text = _card_lines(root / "README.md")
            first = text[moved[0]].decode(errors="replace").strip()[:200] if moved[0] < len(text) else "(gone)"
            lines.append(f"card lines {_shown([i + 1 for i in moved])} differ; line {moved[0] + 1} now: {first}")
    return lines


def check(name: str, root: Path, card: bool = False) -> None:
    """Fail the calling test with the lines of ``differences`` when the run does not match the stored one."""
    import pytest

    lines = differences(name, root, card)
    if lines:
        pytest.fail("\n".join(lines), pytrace=False)


def refresh(name: str, root: Path, card: bool) -> None:
    """Write ``root``'s digest and fingerprint as the stored ``name`` (only on purpose; see digests.json)."""
    data, unit = json.loads(STORED.read_text(encoding="utf-8")), vector_unit()
    data[name]["by_vector_unit"][unit] = {"vector_unit": unit} | fingerprint(root, card)
    tmp = STORED.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(STORED)


if __name__ == "__main__":
    # python -m tests.support.digests OUT [--card]              print a run's digest
    # python -m tests.support.digests OUT [--card] --diff NAME  what differs from the stored run NAME
    # python -m tests.support.digests OUT [--card] --write NAME store OUT as NAME for this machine's vector unit
    import sys

    args = sys.argv[1:]
    out, card = Path(args[0]), "--card" in args
    if "--write" in args:
        refresh(args[args.index("--write") + 1], out, card)
    elif "--diff" in args:
        print("\n".join(differences(args[args.index("--diff") + 1], out, card)) or "same as stored")
    else:
        print(run_digest(out, card))
