"""Run candidates through an ordered list of judges.

Semantics (see ``synth.judge.config``): stage 1 judges every candidate; a candidate stops at the
first stage that decides ``negative`` or ``false_negative``; only ``uncertain`` escalates; the last
stage is authoritative, and what is still uncertain after it keeps ``uncertain`` as its final verdict
(policies treat that as suspect: fail closed).

Persistence: each stage first takes the store's verdicts for (query_id, doc_id, that judge's
fingerprint); the rest it judges in chunks of ``chunk`` candidates, writing each chunk's verdicts to
the store as soon as the judge returns, so a killed run loses at most one chunk per stage and a rerun
calls no judge for anything already stored. A (query_id, doc_id) appearing twice is judged once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from synth.judge.base import Candidate, Judge, Judgement, StageVerdict
from synth.judge.store import Key, VerdictStore

CHUNK = 256


@dataclass
class StageStats:
    stage: str
    kind: str
    fingerprint: str
    candidates: int = 0  # reached this stage (unique (query_id, doc_id))
    reused: int = 0  # served from the store
    judged: int = 0  # sent to the judge in this run
    negative: int = 0
    false_negative: int = 0
    uncertain: int = 0  # escalated (or, at the last stage, final uncertain)
    failed: int = 0  # uncertain because the judge could not decide (parse failure, missing score ...)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["seconds"] = round(self.seconds, 3)
        return d


@dataclass
class CascadeResult:
    judgements: list[Judgement]  # aligned with the input candidates
    stats: list[StageStats] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"negative": 0, "false_negative": 0, "uncertain": 0}
        for j in self.judgements:
            out[j.verdict] += 1
        return out

    def report(self) -> dict:
        return {"final": self.counts(), "stages": [s.to_dict() for s in self.stats]}


def _record(judge: Judge, v: StageVerdict) -> dict:
    return {
        "stage": judge.name,
        "kind": judge.kind,
        "verdict": v.verdict,
        "score": v.score,
        "model": v.model,
        "prompt_sha256": v.prompt_sha256,
        "detail": v.detail,
        "failed": v.failed,
    }


def run_cascade(
    candidates: Sequence[Candidate],
    judges: Sequence[Judge],
    store: VerdictStore,
    *,
    on_stage: Callable[[StageStats], None] | None = None,
    chunk: int = CHUNK,
) -> CascadeResult:
    if not judges:
        raise ValueError("run_cascade: a cascade needs at least one judge")
    first: dict[Key, Candidate] = {}
    for c in candidates:
        first.setdefault(c.key, c)
    records: dict[Key, list[dict]] = {k: [] for k in first}
    final: dict[Key, tuple[str, str]] = {}  # key -> (verdict, deciding stage)
    pending = list(first)  # keys still uncertain, in first-seen order
    stats: list[StageStats] = []
    for n, judge in enumerate(judges):
        fp = judge.fingerprint()
        st = StageStats(judge.name, judge.kind, fp, candidates=len(pending))
        t0 = time.perf_counter()
        got: dict[Key, StageVerdict] = store.get(fp, pending) if pending else {}
        st.reused = len(got)
        todo = [k for k in pending if k not in got]
        for s in range(0, len(todo), chunk):
            keys = todo[s : s + chunk]
            verdicts = judge.judge([first[k] for k in keys])
            if len(verdicts) != len(keys):  # a judge bug, not bad model output: stop loudly
                raise RuntimeError(f"judge {judge.name}: {len(verdicts)} verdicts for {len(keys)} candidates")
            items = list(zip(keys, verdicts))
            store.put(fp, judge.name, judge.kind, items)
            got.update(items)
            st.judged += len(keys)
        still = []
        for k in pending:
            v = got[k]
            records[k].append(_record(judge, v))
            if v.verdict == "uncertain":
                st.uncertain += 1
                st.failed += int(v.failed)
                still.append(k)
            else:
                setattr(st, v.verdict, getattr(st, v.verdict) + 1)
                final[k] = (v.verdict, judge.name)
        pending = still
        st.seconds = time.perf_counter() - t0
        stats.append(st)
        if on_stage is not None:
            on_stage(st)
        if not pending:
            # later stages see nothing; still report them so a report always lists every stage
            for later in judges[n + 1 :]:
                stats.append(StageStats(later.name, later.kind, ""))
            break
    out = []
    for c in candidates:
        verdict, stage = final.get(c.key, ("uncertain", ""))
        out.append(Judgement(c.query_id, c.doc_id, verdict, stage, [dict(r) for r in records[c.key]]))
    return CascadeResult(out, stats)
