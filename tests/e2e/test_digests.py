"""The published bytes stay what they were: digests of two runs against tests/support/digests.json.

- recipes/resa2.yaml: dataset/** and the card (README.md), byte for byte.
- the main job (recipes/resa2_plus_synthetic.yaml, README command 1): dataset/**, i.e. the same rows. It is
  the session's quickstart run (CI's runs/quickstart when current), so this costs no extra run in CI.

When a change is meant to alter the output, refresh the digests as digests.json says, and say why. A mismatch
names what moved: packages off the lock (constraints.txt), files, and per split the columns and rows.
"""

from __future__ import annotations

from tests.support.digests import check


def test_resa2_dataset_and_card_are_byte_identical(session_resa2_run):
    check("resa2", session_resa2_run, card=True)


def test_main_job_writes_the_same_rows(session_quickstart_run):
    check("main", session_quickstart_run)
