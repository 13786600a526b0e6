"""``select``: judge -> policy -> mix, with backfill (``synth.select.selection``), and the run's set-up of the
judge cascade (``synth.judge.runner.CascadeRunner``): the cascade file checked, a cross-encoder trained on the
run's *source* qrels when the cascade asks for ``model: trained``, the verdict store keyed by source + cascade.

- The trained cross-encoder is cached in ``<cache_dir>/judge/ce-<hash of data + settings>``: a rerun or a
  resumed run never retrains.
- Verdicts persist in ``<cache_dir>/judge/<hash of source data + cascade>/verdicts.sqlite``: a killed run
  resumes without re-judging, a rerun makes no judge call at all.
Without judge or mix, the mined picks are published as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from synth.core.errors import UserError
from synth.core.files import read_json
from synth.embed import BUNDLED_MODEL
from synth.formats.rows import negatives_from_mined
from synth.judge.base import JudgeContext
from synth.judge.config import CrossEncoderStage, load_cascade
from synth.judge.runner import CascadeRunner
from synth.judge.train import META, train_cross_encoder
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, mines
from synth.select.mix import synthetic_by_pair
from synth.select.selection import select as select_negatives

log = logging.getLogger("synth.pipeline.select")

TRAINED = "trained"  # cascade value of cross_encoder.model: train one on this run's source qrels
FLAGGED_LOUD = 0.9  # at its intended operating point a judge flags about 2/3 of what selection looks at


def run(ctx: RunContext) -> dict:

    recipe, pairs = ctx.recipe, ctx.pairs
    pool = negatives_from_mined(ctx.mined, ctx.data.corpus)
    if recipe.judge is None and recipe.mix is None:
        ctx.negatives, ctx.n = pool, recipe.mine.n_negatives
        ctx.notices += selection_notices(ctx.report)
        return {"rows": sum(len(x) for x in pool)}
    n_mined = recipe.mix.mined if recipe.mix else recipe.mine.n_negatives
    n_synthetic = recipe.mix.synthetic if recipe.mix else 0
    synthetic = (
        synthetic_by_pair(*_pair_keys(pairs), ctx.synthetic_negatives, ctx.query_emb, ctx.embed_passages)
        if n_synthetic
        else [[] for _ in pool]
    )
    runner = ce_info = None
    if recipe.judge is not None:
        runner, ce_info = open_judges(ctx, n_mined + n_synthetic)
    try:
        selected = select_negatives(
            pairs,
            ctx.data,
            ctx.mined.positive_scores.tolist(),
            pool,
            synthetic,
            n_mined,
            n_synthetic,
            judge=runner,
            policy=recipe.judge.policy if recipe.judge else "keep",
            cap=recipe.judge.cap if recipe.judge else None,
            backfill=ctx.backfill,
        )
        if runner is not None:
            for i, negs in enumerate(selected.negatives):
                for neg in negs or []:
                    runner.annotate(pairs.query_ids[i], neg)
            ctx.verdict_rows, ctx.judged = runner.verdict_rows(), True
            ctx.report["judging"] = {
                **runner.report(recipe.judge.cascade),
                "policy": selected.policy_counts,
                "cross_encoder": ce_info,
            }
    finally:
        if runner is not None:
            runner.close()
    ctx.negatives, ctx.promoted, ctx.n = selected.negatives, selected.promoted, n_mined + n_synthetic
    ctx.report["mix"] = selected.mix.as_dict()
    ctx.report["selection"] = selected.report
    ctx.notices += selection_notices(ctx.report)
    return {"rows": sum(len(x) for x in selected.negatives if x is not None)}


def _pair_keys(pairs) -> tuple:
    return pairs.query_ids, pairs.positive_ids, pairs.query_rows


def selection_notices(report: dict) -> list[str]:
    """Lines a run must not keep quiet: what each learned judge said (it fell back, its target is out of
    reach), judges that flagged nearly every candidate they saw, pairs left short of negatives."""
    judging = report.get("judging") or {}
    out = [line for st in judging.get("stages") or [] for line in (st.get("model_report") or {}).get("notices") or []]
    final = judging.get("final") or {}
    seen = sum(final.values())
    flagged = final.get("false_negative", 0) + final.get("uncertain", 0)
    if seen and flagged / seen >= FLAGGED_LOUD:
        out.append(
            f"the judges flagged {flagged} of the {seen} candidates they saw ({flagged / seen:.0%}): the negatives "
            "that remain come from far down the rankings"
        )
    sel, mining = report.get("selection") or {}, report.get("mining") or {}
    if sel.get("pairs_short"):
        target = sum((sel.get("target") or {}).values())
        reasons = ", ".join(f"{k} {v}" for k, v in (sel.get("short_reasons") or {}).items() if v)
        out.append(f"{sel['pairs_short']} of {sel['pairs']} pairs are short of {target} negatives ({reasons})")
    elif not sel and mining.get("short_pairs"):  # no selection stage: mining's shortfall is what is published
        n = ((report.get("recipe") or {}).get("mine") or {}).get("n_negatives")
        out.append(
            f"{mining['short_pairs']} of {mining['pairs']} pairs are short of {n} negatives (their rankings ran out "
            "of admissible candidates down to mine.backfill_depth)"
        )
    return out


def open_judges(ctx: RunContext, n_select: int):
    """The run's ``CascadeRunner`` (and the trained cross-encoder's stats, or None)."""

    recipe = ctx.recipe
    cascade = load_run_cascade(recipe)
    cache = Path(recipe.embed.cache_dir)
    ce_info = None
    if any(_is_trained(s) for s in cascade.stages):
        ce_info = trained_cross_encoder(recipe, ctx.data, ctx.source_qrels, ctx.source_fp, cache)
        for stage in cascade.stages:
            if _is_trained(stage):
                stage.model = ce_info["path"]
    state = hashlib.sha256(f"{ctx.source_fp}\0{cascade.model_dump_json()}".encode()).hexdigest()[:24]
    runner = CascadeRunner(
        cascade, cache / "judge" / state, ctx.llm, ctx.prompts, recipe.seed, judge_context(ctx, n_select)
    )
    return runner, ce_info


def _is_trained(stage) -> bool:

    return isinstance(stage, CrossEncoderStage) and stage.model == TRAINED


def load_run_cascade(recipe):
    """The recipe's cascade, checked up front so a bad file fails before any work."""

    cascade = load_cascade(recipe.judge.cascade)
    needs_llm = [s.name for s in cascade.stages if s.kind.startswith("llm_") and s.llm is None]
    if needs_llm and recipe.llm is None:
        raise UserError(
            f"{recipe.judge.cascade}: stage {needs_llm[0]!r} needs an LLM: add `llm:` to the recipe "
            "(e.g. {kind: local}) or to the stage"
        )
    return cascade


def judge_context(ctx: RunContext, n_select: int):
    """The run's data as a judge that learns from it sees it (``synth.judge.base.JudgeContext``)."""

    cfg = ctx.recipe.embed
    # the source as loaded (hashed once, at load) plus the synthetic pairs that joined it since
    joined = [[q.id, q.text, q.doc_id] for q in ctx.synthetic_queries]
    identity = [
        ctx.source_fp,
        joined,
        ctx.open_encoder().setting_key(cfg.query_prompt),
        ctx.encoder.setting_key(cfg.passage_prompt),
        ctx.searcher.factory,
        ctx.recipe.index.metric,
    ]
    fp = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
    depth = ctx.recipe.mine.backfill_depth if ctx.recipe.mine is not None else 0
    return JudgeContext(
        ctx.data,
        ctx.source_qrels if ctx.source_qrels is not None else ctx.data.qrels,
        ctx.corpus_emb,
        ctx.query_emb,
        ctx.search,
        fp,
        seed=ctx.recipe.seed,
        n_select=n_select,
        select_depth=len(ctx.data.corpus) if depth is None else depth,  # how far backfill may take selection
        embed_passages=ctx.embed_passages,
        cache_dir=Path(cfg.cache_dir),
    )


def trained_cross_encoder(recipe, data, source_qrels, source_fp: str, cache_dir: Path) -> dict:
    """Train (or reuse) the run's cross-encoder; returns its ``synth_judge.json`` stats plus path/reused."""

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


STAGE = Stage(
    "select",
    run,
    mines,
    reads=("data", "source_qrels", "source_fp", "pairs", "mined", "corpus_emb", "query_emb", "searcher"),
    optional=("backfill", "synthetic_queries", "synthetic_negatives"),
    writes=("negatives", "promoted", "n", "judged", "verdict_rows"),
    sections=("judging", "mix", "selection"),
)
