"""What to do with judged negatives: policies applied after judging, with no model calls.

They work on a neutral record (``core.records.Example``: a query, its positives and its negatives) so any output
format can be mapped in and out. "Flagged" means the final verdict is ``false_negative`` OR
``uncertain`` (fail closed: a negative nobody could clear is not trusted as a negative). A negative
with no verdict (never judged, e.g. outside the judged depth) is kept as it is.

- ``keep``: unchanged (the baseline; counts are still reported).
- ``drop_false_negatives``: remove flagged negatives; the example stays.
- ``drop_pair``: drop the whole example when any of its negatives is flagged.
- ``relabel_as_positive``: a confirmed ``false_negative`` moves to the positives; an ``uncertain``
  one is removed (never kept as a negative, never promoted on a guess).
- ``cap`` (RLHN): drop a query with more than ``cap`` flagged negatives, before the policy; such a
  query's positive is probably not the only right answer, so its whole list is suspect. Combines
  with any policy.
An example left with no negatives is kept (it still has positives; the writer decides what to do).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Mapping, Sequence

from synth.core.records import Example
from synth.judge.base import Verdict

POLICIES = ("keep", "drop_pair", "drop_false_negatives", "relabel_as_positive")
FLAGGED = ("false_negative", "uncertain")


def apply_policy(
    examples: Sequence[Example], verdicts: Mapping[tuple[str, str], Verdict], policy: str, cap: int | None = None
) -> tuple[list[Example], dict]:
    """The examples after ``policy`` (and ``cap``), in input order, and counts for the report."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    if cap is not None and cap < 0:
        raise ValueError("cap must be >= 0")
    c: Counter = Counter()
    out: list[Example] = []
    for ex in examples:
        c["examples_in"] += 1
        c["negatives_in"] += len(ex.negatives)
        v_of = [verdicts.get((ex.query_id, n.id)) for n in ex.negatives]
        for v in v_of:
            c[f"verdict_{v or 'unjudged'}"] += 1
        flagged = sum(v in FLAGGED for v in v_of)
        if cap is not None and flagged > cap:
            c["examples_dropped_by_cap"] += 1
            continue
        if policy == "keep":
            kept = ex
        elif policy == "drop_pair":
            if flagged:
                c["examples_dropped_by_policy"] += 1
                continue
            kept = ex
        elif policy == "drop_false_negatives":
            negs = [n for n, v in zip(ex.negatives, v_of) if v not in FLAGGED]
            c["negatives_removed"] += len(ex.negatives) - len(negs)
            kept = replace(ex, negatives=negs)
        else:  # relabel_as_positive
            have = {p.id for p in ex.positives}
            promoted = [n for n, v in zip(ex.negatives, v_of) if v == "false_negative" and n.id not in have]
            negs = [n for n, v in zip(ex.negatives, v_of) if v not in FLAGGED]
            c["negatives_relabelled"] += len(promoted)
            c["negatives_removed"] += len(ex.negatives) - len(negs) - len(promoted)
            kept = replace(ex, positives=list(ex.positives) + list(dict.fromkeys(promoted)), negatives=negs)
        c["examples_out"] += 1
        c["negatives_out"] += len(kept.negatives)
        if not kept.negatives and ex.negatives:
            c["examples_left_without_negatives"] += 1
        out.append(kept)
    counts = {"policy": policy, "cap": cap, **{k: c[k] for k in sorted(c)}}
    for k in ("examples_out", "negatives_out", "examples_dropped_by_cap"):
        counts.setdefault(k, 0)
    return out, counts
