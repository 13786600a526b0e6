"""The judge cascade of a run or a relabel: its set-up (trained cross-encoder, verdict store) and the
``CascadeRunner`` that the run's selection stage (``synth.select.selection``) calls round by round and
``synth relabel`` calls once; LLM judges get their clients from the command's ``ClientPool``.

- The cascade is a ``judges/*.yaml`` file. A ``cross_encoder`` stage with ``model: trained`` gets a
  cross-encoder trained on this run's *source* qrels (``synth.judge.train``, settings in
  ``judge.train_cross_encoder``), cached in ``<cache_dir>/judge/ce-<hash of data + settings>``: a
  rerun or a resumed run never retrains.
- Candidates: every mined pool entry and every synthetic negative of a pair, compared against the
  pair's positive, with the bi-encoder scores mining (or the synthetic stage's embedding) gave.
- Verdicts persist in ``<cache_dir>/judge/<hash of source data + cascade>/verdicts.sqlite`` (a
  ``VerdictStore``, committed per chunk): a killed run resumes without re-judging, a rerun makes
  no judge call at all.
- The policy (``synth.judge.policies``) and mixing run in ``synth.select.selection``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from synth.core.errors import UserError
from synth.judge.base import Candidate, Judgement
from synth.judge.cascade import CascadeResult, StageStats
from synth.judge.config import Cascade, CrossEncoderStage, load_cascade
from synth.core.records import MINED, Negative, Qrels, SourceData

log = logging.getLogger("synth.judge.run")

TRAINED = "trained"  # cascade value of cross_encoder.model: train one on this run's source qrels


def source_fingerprint(data: SourceData) -> str:
    """Content of the source as loaded (corpus, queries, qrels): keys the CE cache and the verdict store."""
    h = hashlib.sha256()
    for part in (data.corpus.ids, data.corpus.texts, data.queries.ids, data.queries.texts):
        for x in part:
            h.update(x.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        h.update(b"\x01")
    h.update(json.dumps(data.qrels, sort_keys=True).encode())
    return h.hexdigest()[:24]


def load_run_cascade(recipe) -> Cascade:
    """The recipe's cascade, checked up front so a bad file fails before any work."""
    cascade = load_cascade(recipe.judge.cascade)
    needs_llm = [s.name for s in cascade.stages if s.kind.startswith("llm_") and s.llm is None]
    if needs_llm and recipe.llm is None:
        raise UserError(
            f"{recipe.judge.cascade}: stage {needs_llm[0]!r} needs an LLM: add `llm:` to the recipe "
            "(e.g. {kind: local}) or to the stage"
        )
    return cascade


def trained_cross_encoder(recipe, data: SourceData, source_qrels: Qrels, source_fp: str, cache_dir: Path) -> dict:
    """Train (or reuse) the run's cross-encoder; returns its ``synth_judge.json`` stats plus path/reused."""
    from synth.core.files import read_json
    from synth.embed import BUNDLED_MODEL
    from synth.judge.train import META, train_cross_encoder

    cfg = recipe.judge.train_cross_encoder
    settings = {"source": source_fp, "seed": recipe.seed, "base_model": BUNDLED_MODEL, **cfg.model_dump()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / "judge" / f"ce-{key}"
    info = read_json(path / META)  # a damaged stats file warns and the model is trained again
    if info is not None:
        return {**info, "path": str(path), "reused": True, "license": "apache-2.0"}
    log.info("training the cross-encoder judge on %d source queries' positives", len(source_qrels))
    info = train_cross_encoder(
        data,
        path,
        base_model=BUNDLED_MODEL,
        qrels=source_qrels,
        seed=recipe.seed,
        epochs=cfg.epochs,
        max_pairs=cfg.max_pairs,
        max_length=cfg.max_length,
        negatives_per_positive=cfg.negatives_per_positive,
        batch_size=cfg.batch_size,
        source_label=f"{recipe.source.kind}:{recipe.source.path}",
    )
    # derived from the bundled all-MiniLM-L6-v2 (Apache-2.0)
    return {**info, "path": str(path), "reused": False, "license": "apache-2.0"}


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


def resolve_trained_models(cascade: Cascade, ce_path: str) -> None:
    for stage in cascade.stages:
        if isinstance(stage, CrossEncoderStage) and stage.model == TRAINED:
            stage.model = ce_path


def needs_training(cascade: Cascade) -> bool:
    return any(isinstance(s, CrossEncoderStage) and s.model == TRAINED for s in cascade.stages)


def store_dir_for(cache_dir: Path, source_fp: str, cascade: Cascade) -> Path:
    state = hashlib.sha256(f"{source_fp}\0{cascade.model_dump_json()}".encode()).hexdigest()[:24]
    return cache_dir / "judge" / state
