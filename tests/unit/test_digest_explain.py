"""The digest test names what moved (files, split, columns, rows, card lines, packages off the lock), not just two
hashes: checked on a crafted run folder whose rows are then changed in known places."""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset, DatasetDict

from tests.support import digests


def _write(root: Path, scores: list[float], card: str) -> None:
    rows = {"query_id": ["q1", "q2", "q3"], "negative_scores": [[s] for s in scores], "anchor": ["a", "b", "c"]}
    DatasetDict({"triplets": Dataset.from_dict(rows)}).save_to_disk(str(root / "dataset"))
    (root / "README.md").write_text(card + "Made with synth 0.1.0, torch x\n", encoding="utf-8")


def test_a_moved_score_is_named_by_split_row_and_column(tmp_path):
    _write(tmp_path / "a", [0.5, 0.25, 0.125], "# card\nrows: 3\n")
    want = digests.fingerprint(tmp_path / "a", card=True)
    assert digests.differences("x", tmp_path / "a", card=True, want=want) == []

    # the last bit of one score moves, the card's second line too; the library-version line is ignored
    _write(tmp_path / "b", [0.5, 0.25000001, 0.125], "# card\nrows: three\n")
    lines = digests.differences("x", tmp_path / "b", card=True, want=want)
    text = "\n".join(lines)
    assert "split triplets: 1 of 3 rows differ (stored 3): rows 1; columns negative_scores" in text
    assert '"negative_scores": [0.25000001]' in text  # the moved row's values, now
    assert "card lines 2 differ; line 2 now: rows: three" in text
    assert any(line.startswith("file dataset/triplets/") and line.endswith("differs") for line in lines)
    assert "anchor" not in text.split("columns ")[1].split("\n")[0]  # unchanged columns are not named


def test_packages_off_the_lock_are_named(tmp_path, monkeypatch):
    lock = tmp_path / "constraints.txt"
    lock.write_text("# comment\npytest==0.0.1\nnot-installed-anything==1.0\n", encoding="utf-8")
    monkeypatch.setattr(digests, "LOCK", lock)
    drift = digests.lock_drift()
    assert len(drift) == 1 and drift[0].startswith("pytest ") and drift[0].endswith("(the lock pins 0.0.1)")


def test_the_lock_pins_what_is_installed():
    """The repository's lock and this environment agree (CI installs with -c constraints.txt); a package off
    the lock is what makes the stored digests unreachable."""
    assert digests.LOCK.exists()
    assert digests.lock_drift() == []


def test_each_run_is_checked_against_the_one_stored_for_this_machines_vector_unit(tmp_path, monkeypatch):
    """AVX2 and AVX-512 kernels give other last bits, so the stored runs are kept per vector unit; a unit with
    nothing stored fails with what to do, never passes by default."""
    _write(tmp_path / "a", [0.5, 0.25, 0.125], "# card\n")
    _write(tmp_path / "b", [0.5, 0.25000001, 0.125], "# card\n")
    here, a, b = digests.vector_unit(), digests.fingerprint(tmp_path / "a"), digests.fingerprint(tmp_path / "b")
    assert here  # torch names it: "AVX2", "AVX512", ...
    stored = tmp_path / "digests.json"
    runs = {here: {"vector_unit": here} | a, "OTHER-UNIT": {"vector_unit": "OTHER-UNIT"} | b}
    stored.write_text(json.dumps({"x": {"recipe": "r.yaml", "by_vector_unit": runs}}), encoding="utf-8")
    monkeypatch.setattr(digests, "STORED", stored)
    assert digests.stored("x")["digest"] == a["digest"] and digests.stored("x", "OTHER-UNIT")["digest"] == b["digest"]
    assert digests.differences("x", tmp_path / "a") == []
    moved = digests.differences("x", tmp_path / "b")
    assert moved[0].startswith(f"x: digest {b['digest'][:16]}, stored {a['digest'][:16]} for {here} (r.yaml)")

    stored.write_text(json.dumps({"x": {"by_vector_unit": {"OTHER-UNIT": runs["OTHER-UNIT"]}}}), encoding="utf-8")
    (line,) = digests.differences("x", tmp_path / "b")  # the same bytes as OTHER-UNIT's, but not this unit's
    assert f"no run stored for this CPU's vector unit ({here}; stored for: OTHER-UNIT)" in line
    assert "--write x" in line

    digests.refresh("x", tmp_path / "b", card=False)  # stores for this unit, keeps the other
    kept = json.loads(stored.read_text(encoding="utf-8"))["x"]["by_vector_unit"]
    assert set(kept) == {here, "OTHER-UNIT"} and kept[here]["digest"] == b["digest"]
    assert digests.differences("x", tmp_path / "b") == []
