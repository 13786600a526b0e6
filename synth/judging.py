"""The run's judge stage: mined pool + synthetic negatives -> the cascade -> a policy -> kept ids.

- The cascade is a ``judges/*.yaml`` file. A ``cross_encoder`` stage with ``model: trained`` gets a
  cross-encoder trained on this run's *source* qrels (``synth.judge.train``, settings in
  ``judge.train_cross_encoder``), cached in ``<cache_dir>/judge/ce-<hash of data + settings>``: a
  rerun or a resumed run never retrains.
- Candidates: every mined pool entry and every synthetic negative of a pair, compared against the
  pair's positive, with the bi-encoder scores mining (or the synthetic stage's embedding) gave.
- Verdicts persist in ``<cache_dir>/judge/<hash of source data + cascade>/verdicts.sqlite`` (a
  ``VerdictStore``, committed per chunk): a killed run resumes without re-judging, a rerun makes
  no judge call at all.
- The policy (``synth.judge.policies``) runs per pair over its whole candidate list (pool +
  synthetic); what it keeps goes to mixing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from synth.errors import UserError
from synth.judge.base import Candidate
from synth.judge.config import Cascade, CrossEncoderStage, load_cascade
from synth.judge.policies import Example, Passage, apply_policy
from synth.mix import MINED, Negative
from synth.records import Pairs, Qrels, SourceData

log = logging.getLogger("synth.judging")

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
        raise UserError(f"{recipe.judge.cascade}: stage {needs_llm[0]!r} needs an LLM: add `llm:` to the recipe "
                        "(e.g. {kind: local}) or to the stage")
    return cascade


def trained_cross_encoder(recipe, data: SourceData, source_qrels: Qrels, source_fp: str, cache_dir: Path) -> dict:
    """Train (or reuse) the run's cross-encoder; returns its ``synth_judge.json`` stats plus path/reused."""
    from synth.embed import BUNDLED_MODEL
    from synth.judge.train import META, train_cross_encoder

    cfg = recipe.judge.train_cross_encoder
    settings = {"source": source_fp, "seed": recipe.seed, "base_model": BUNDLED_MODEL, **cfg.model_dump()}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir / "judge" / f"ce-{key}"
    if (path / META).is_file():
        info = json.loads((path / META).read_text())
        return {**info, "path": str(path), "reused": True, "license": "apache-2.0"}
    log.info("training the cross-encoder judge on %d source queries' positives", len(source_qrels))
    info = train_cross_encoder(data, path, base_model=BUNDLED_MODEL, qrels=source_qrels, seed=recipe.seed,
                               epochs=cfg.epochs, max_pairs=cfg.max_pairs, max_length=cfg.max_length,
                               negatives_per_positive=cfg.negatives_per_positive, batch_size=cfg.batch_size,
                               source_label=f"{recipe.source.kind}:{recipe.source.path}")
    # derived from the bundled all-MiniLM-L6-v2 (Apache-2.0)
    return {**info, "path": str(path), "reused": False, "license": "apache-2.0"}


class JudgeClients:
    """``make_judge``'s ``llm_client``: the run's client for stages without their own ``llm``, a client
    per distinct backend otherwise (sharing the run's accounting, so report["llm"] counts them)."""

    def __init__(self, run_client, cache_dir: Path):
        self.run_client = run_client
        self.cache_dir = cache_dir
        self.extra: dict[str, object] = {}

    def __call__(self, cfg):
        if cfg is None:
            return self.run_client
        from synth.llm import make_backend
        from synth.llm.accounting import Accounting
        from synth.llm.cache import RequestCache
        from synth.llm.client import LLMClient

        key = cfg.model_dump_json()
        if key not in self.extra:
            accounting = self.run_client.accounting if self.run_client is not None else Accounting()
            self.extra[key] = LLMClient(make_backend(cfg), RequestCache.in_dir(self.cache_dir), accounting,
                                        cfg.max_reasks)
        return self.extra[key]

    def close(self) -> None:
        for c in self.extra.values():
            c.close()


def build_candidates(pairs: Pairs, data: SourceData, positive_scores: Sequence[float],
                     negatives: Sequence[Sequence[Negative]]) -> list[Candidate]:
    """One candidate per (pair, negative), pair order then the negative's order."""
    out = []
    for i, negs in enumerate(negatives):
        qid, pid = pairs.query_ids[i], pairs.positive_ids[i]
        qtext = data.queries.texts[int(pairs.query_rows[i])]
        ptext = data.corpus.texts[int(pairs.positive_rows[i])]
        for neg in negs:
            out.append(Candidate(qid, qtext, neg.id, neg.text, pid, ptext, float(neg.score),
                                 float(positive_scores[i])))
    return out


@dataclass
class Judged:
    kept: list[set[str] | None]  # per pair: ids the policy kept (None: pair dropped)
    promoted: list[tuple[str, str]]  # (query_id, doc_id) relabelled as positives (corpus documents only)
    verdict_rows: list[dict]  # the `verdicts` config
    report: dict = field(default_factory=dict)


def judge_pairs(recipe, cascade: Cascade, pairs: Pairs, data: SourceData, positive_scores: Sequence[float],
                mined_pool: Sequence[Sequence[Negative]], synthetic: Sequence[Sequence[Negative]],
                store_dir: Path, run_client, prompts, ce_info: dict | None) -> Judged:
    """Judge every candidate, write verdicts onto the ``Negative``s (in place), apply the policy."""
    from synth.judge import make_judge
    from synth.judge.cascade import run_cascade
    from synth.judge.store import VerdictStore

    both = [list(m) + list(s) for m, s in zip(mined_pool, synthetic)]
    candidates = build_candidates(pairs, data, positive_scores, both)
    store_path = store_dir / "verdicts.sqlite"
    clients = JudgeClients(run_client, Path(recipe.embed.cache_dir))
    store = VerdictStore(store_path)
    try:
        judges = [make_judge(stage, llm_client=clients, prompts=prompts, seed=recipe.seed) for stage in cascade.stages]
        result = run_cascade(candidates, judges, store, on_stage=lambda st: log.info(
            "judge %-10s in %6d  negative %6d  false_negative %6d  uncertain %6d  (%d stored)  %.1fs",
            st.stage, st.candidates, st.negative, st.false_negative, st.uncertain, st.reused, st.seconds))
    finally:
        store.close()
        clients.close()
    by_key = {(j.query_id, j.doc_id): j for j in result.judgements}
    source_of: dict[tuple[str, str], str] = {}
    for i, negs in enumerate(both):
        for neg in negs:
            j = by_key[(pairs.query_ids[i], neg.id)]
            source_of.setdefault((j.query_id, j.doc_id), neg.source)
            neg.verdict, neg.stage = j.verdict, j.stage
            neg.judge_score, neg.model = float(j.score), j.model
            neg.prompt_sha256 = j.stages[-1].get("prompt_sha256", "") if j.stages else ""

    examples = [Example(pairs.query_ids[i], "", [Passage(pairs.positive_ids[i], "")],
                        [Passage(n.id, "") for n in negs]) for i, negs in enumerate(both)]
    verdicts = {k: j.verdict for k, j in by_key.items()}
    cfg = recipe.judge
    kept_examples, policy_counts = apply_policy(examples, verdicts, cfg.policy, cfg.cap)
    survivors = {(ex.query_id, ex.positives[0].id): ex for ex in kept_examples}
    kept: list[set[str] | None] = []
    promoted: list[tuple[str, str]] = []
    for i in range(len(pairs)):
        ex = survivors.get((pairs.query_ids[i], pairs.positive_ids[i]))
        if ex is None:
            kept.append(None)
            continue
        kept.append({n.id for n in ex.negatives})
        for p in ex.positives[1:]:
            if source_of.get((ex.query_id, p.id)) == MINED:
                promoted.append((ex.query_id, p.id))
    promoted = list(dict.fromkeys(promoted))
    policy_counts["promoted_corpus_documents"] = len(promoted)

    rows = []
    for j in by_key.values():
        rows.append({
            "query_id": j.query_id, "doc_id": j.doc_id, "source": source_of[(j.query_id, j.doc_id)],
            "verdict": j.verdict, "stage": j.stage, "score": float(j.score), "model": j.model,
            "prompt_sha256": j.stages[-1].get("prompt_sha256", "") if j.stages else "",
            "stage_names": [s["stage"] for s in j.stages],
            "stage_verdicts": [s["verdict"] for s in j.stages],
            "stage_scores": [float(s["score"]) for s in j.stages],
        })
    sources = [n.source for negs in both for n in negs]
    report = {
        "cascade": {"path": recipe.judge.cascade, "name": cascade.name,
                    "resolved": cascade.model_dump(mode="json")},
        "candidates": {"mined": sources.count(MINED), "synthetic": len(sources) - sources.count(MINED),
                       "unique": len(by_key)},
        **result.report(),
        # per unique (query_id, doc_id), as the `verdicts` config holds them; "final_per_candidate" counts
        # a document that is a candidate of two pairs of one query twice
        "final": {v: sum(j.verdict == v for j in by_key.values()) for v in ("negative", "false_negative", "uncertain")},
        "final_per_candidate": result.counts(),
        "policy": policy_counts,
        "cross_encoder": ce_info,
        "store": str(store_path),
    }
    return Judged(kept, promoted, rows, report)


def resolve_trained_models(cascade: Cascade, ce_path: str) -> None:
    for stage in cascade.stages:
        if isinstance(stage, CrossEncoderStage) and stage.model == TRAINED:
            stage.model = ce_path


def needs_training(cascade: Cascade) -> bool:
    return any(isinstance(s, CrossEncoderStage) and s.model == TRAINED for s in cascade.stages)


def store_dir_for(cache_dir: Path, source_fp: str, cascade: Cascade) -> Path:
    state = hashlib.sha256(f"{source_fp}\0{cascade.model_dump_json()}".encode()).hexdigest()[:24]
    return cache_dir / "judge" / state
