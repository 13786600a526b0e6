"""The digest test names what moved (files, split, columns, rows, card lines, packages off the lock), not just two
hashes: checked on a crafted run folder whose rows are then changed in known places."""

from __future__ import annotations

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
