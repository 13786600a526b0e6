"""The ``CascadeRunner``: a judge cascade (``judges/*.yaml``) with its verdict store for the length of a
command. The run's selection stage (``synth.select.selection``) calls it round by round; ``synth relabel``
calls it once. LLM judges get their clients from the command's ``ClientPool``. The run's set-up of the
cascade (a trained cross-encoder, where the store lives) is the select stage's
(``synth.pipeline.stages.select``).

Verdicts persist in the store (``synth.judge.store.VerdictStore``, committed per chunk) as they arrive: a
killed command resumes without re-judging, a rerun makes no judge call at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

from synth.core.records import MINED, Negative
from synth.judge.base import Candidate, Judgement
from synth.judge.cascade import CascadeResult, StageStats
from synth.judge.config import Cascade

log = logging.getLogger("synth.judge.runner")


class CascadeRunner:
    """The cascade's judges and verdict store for the length of a command. The run's selection calls
    ``judge`` once per round (the pool, then backfill), so a judge that fits a model (``fn_risk``) fits
    once and loads once; relabel calls ``judge_all`` once. Every verdict persists in the store as it
    arrives. LLM judges get their client from ``llm``, the command's ``synth.llm.pool.ClientPool``
    (which owns and closes the clients)."""

    def __init__(self, cascade: Cascade, store_dir: Path, llm=None, prompts=None, seed: int = 0, context=None):
        from synth.judge import make_judge
        from synth.judge.store import VerdictStore

        self.cascade = cascade
        self.store_path = store_dir / "verdicts.sqlite"
        self.store = VerdictStore(self.store_path)
        try:
            self.judges = [
                make_judge(stage, llm_client=llm, prompts=prompts, seed=seed, context=context)
                for stage in cascade.stages
            ]
        except BaseException:
            self.close()
            raise
        self.judgements: dict[tuple[str, str], Judgement] = {}
        self.source_of: dict[tuple[str, str], str] = {}
        self.stats: dict[str, StageStats] = {}
        self.candidates = {"mined": 0, "synthetic": 0}

    def judge(self, candidates: list[Candidate], sources: list[str] | None = None) -> None:
        """Judge what is new among ``candidates`` (a round of the run's selection)."""
        for c, src in zip(candidates, sources or [MINED] * len(candidates)):
            self.source_of.setdefault(c.key, src)
            self.candidates["mined" if src == MINED else "synthetic"] += 1
        new = [c for c in candidates if c.key not in self.judgements]
        if new:
            self._run(new)

    def judge_all(self, candidates: list[Candidate]) -> CascadeResult:
        """Judge every candidate in one pass (relabel); the cascade's result, aligned with ``candidates``
        (every stage listed even when there is nothing to judge)."""
        for c in candidates:
            self.source_of.setdefault(c.key, MINED)
        self.candidates["mined"] += len(candidates)
        return self._run(candidates)

    def _run(self, candidates: list[Candidate]) -> CascadeResult:
        from synth.judge.cascade import run_cascade

        result = run_cascade(
            candidates,
            self.judges,
            self.store,
            on_stage=lambda st: log.info(
                "judge %-10s in %6d  negative %6d  false_negative %6d  uncertain %6d  (%d stored)  %.1fs",
                st.stage,
                st.candidates,
                st.negative,
                st.false_negative,
                st.uncertain,
                st.reused,
                st.seconds,
            ),
        )
        for j in result.judgements:
            self.judgements.setdefault((j.query_id, j.doc_id), j)
        for st in result.stats:
            merged = self.stats.setdefault(st.stage, StageStats(st.stage, st.kind, st.fingerprint))
            merged.fingerprint = merged.fingerprint or st.fingerprint
            for k in ("candidates", "reused", "judged", "negative", "false_negative", "uncertain", "failed", "seconds"):
                setattr(merged, k, getattr(merged, k) + getattr(st, k))
        return result

    def verdicts(self, examples) -> dict[tuple[str, str], str]:
        """Final verdict of every judged (query_id, negative id) of ``examples``."""
        out = {}
        for ex in examples:
            for n in ex.negatives:
                j = self.judgements.get((ex.query_id, n.id))
                if j is not None:
                    out[(ex.query_id, n.id)] = j.verdict
        return out

    def annotate(self, query_id: str, neg: Negative) -> None:
        """Copy the cascade's verdict onto a published negative (its provenance columns)."""
        j = self.judgements.get((query_id, neg.id))
        if j is None:
            return
        neg.verdict, neg.stage = j.verdict, j.stage
        neg.judge_score, neg.model = float(j.score), j.model
        neg.prompt_sha256 = j.stages[-1].get("prompt_sha256", "") if j.stages else ""

    def verdict_rows(self) -> list[dict]:
        """The ``verdicts`` config: one row per judged (query_id, doc_id), every stage's verdict and score."""
        rows = []
        for key, j in self.judgements.items():
            rows.append(
                {
                    "query_id": j.query_id,
                    "doc_id": j.doc_id,
                    "source": self.source_of.get(key, MINED),
                    "verdict": j.verdict,
                    "stage": j.stage,
                    "score": float(j.score),
                    "model": j.model,
                    "prompt_sha256": j.stages[-1].get("prompt_sha256", "") if j.stages else "",
                    "stage_names": [s["stage"] for s in j.stages],
                    "stage_verdicts": [s["verdict"] for s in j.stages],
                    "stage_scores": [float(s["score"]) for s in j.stages],
                }
            )
        return rows

    def report(self, recipe_cascade_path: str) -> dict:
        stages = []
        for judge in self.judges:
            st = self.stats.get(judge.name) or StageStats(judge.name, judge.kind, judge.fingerprint())
            entry = st.to_dict()
            model_report = getattr(judge, "report", None)
            if callable(model_report):
                entry["model_report"] = model_report()
            stages.append(entry)
        finals = [j.verdict for j in self.judgements.values()]
        return {
            "cascade": {
                "path": recipe_cascade_path,
                "name": self.cascade.name,
                "resolved": self.cascade.model_dump(mode="json"),
            },
            "candidates": {**self.candidates, "unique": len(self.judgements)},
            # per unique (query_id, doc_id), as the `verdicts` config holds them
            "final": {v: finals.count(v) for v in ("negative", "false_negative", "uncertain")},
            "stages": stages,
            "store": str(self.store_path),
        }

    def close(self) -> None:
        self.store.close()
