"""The stages of a run, in order (``STAGES``). Each reads and writes the ``RunContext`` and returns
its figures for the timing table (``rows`` and any extras).

load -> personas -> synthetic_queries -> embed -> index -> filter_queries -> pairs ->
synthetic_negatives -> mine -> select (judge -> policy -> mix, with backfill) -> leakage -> write.
The generation stages are in ``synth.pipeline.generation``. The feature code lives in its own package
(``synth.generate``, ``synth.mine``, ``synth.judge``, ``synth.select.selection``, ``synth.publish``);
these functions only wire it to the run.

Who runs them: ``synth run`` (``run_stages(ctx)``: all), ``synth fn-probe`` (``PROBE_STAGES`` on a view of
the source), ``synth run --dry-run`` (each stage's ``dry`` version over a planning LLM pool). A new stage is
one function and one ``Stage`` line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from synth.core.errors import UserError
from synth.pipeline.context import RunContext
from synth.pipeline.generation import (
    all_queries,
    zero_label_notice,
    filter_queries,
    generate_negatives,
    personas,
    synthetic_negatives,
    synthetic_queries,
)


def needs_index(recipe) -> bool:
    return recipe.output.format != "pairs" or recipe.synthetic_queries is not None


def needs_encoder(recipe) -> bool:
    return needs_index(recipe) or recipe.synthetic_negatives is not None


def load(ctx: RunContext) -> dict:
    from synth.judge.run import source_fingerprint
    from synth.sources import load_source

    data = ctx.data = load_source(ctx.recipe.source)
    ctx.report["input_findings"] = data.findings.as_dict()
    ctx.source_qrels = {q: dict(d) for q, d in data.qrels.items()}  # before synthetic pairs join
    if needs_index(ctx.recipe):  # limits the corpus cannot meet fail now, not after hours of embedding
        from synth.index import check_factory

        check_factory(ctx.recipe.index.factory, len(data.corpus), ctx.recipe.index.train_size)
    if ctx.recipe.output.format != "pairs":
        from synth.mine import corpus_limits

        clamps = corpus_limits(ctx.recipe.mine, len(data.corpus))
        if clamps:
            ctx.report["clamps"] = clamps
    if ctx.recipe.judge is not None:
        ctx.source_fp = source_fingerprint(data)
    if not data.queries.ids:  # zero-label: say what the judges can and cannot learn without a labelled query
        ctx.notices.append(zero_label_notice(ctx.recipe))
    return {
        "rows": sum(1 for pos in data.qrels.values() for g in pos.values() if g > 0),
        "corpus": len(data.corpus),
        "queries": len(data.queries),
    }


def embed(ctx: RunContext) -> dict:
    from synth.embed import embed_texts

    cfg = ctx.recipe.embed
    ctx.corpus_emb = embed_texts(
        ctx.open_encoder(),
        ctx.data.corpus.texts,
        cfg.passage_prompt,
        cfg.cache_dir,
        cfg.chunk_rows,
        "corpus",
        ctx.embed_stats,
    )
    return {"rows": len(ctx.data.corpus)}


def index(ctx: RunContext) -> dict:
    from synth.index import Searcher

    recipe = ctx.recipe
    ctx.searcher = Searcher.from_config(
        recipe.index,
        ctx.corpus_emb,
        recipe.seed,
        top_n=recipe.mine.n_negatives if recipe.mine is not None else 10,  # the n of the reported recall@n
        n_queries=len(ctx.data.queries),
        engine=ctx.engine,
    )
    return {"rows": len(ctx.data.corpus)}


def pairs(ctx: RunContext) -> dict:
    from synth.mine import build_pairs

    ctx.pairs = build_pairs(ctx.data)
    if len(ctx.pairs) == 0:
        raise UserError(
            f"{getattr(ctx.recipe.source, 'path', ctx.recipe.source.kind)}: no (query, positive) pairs to mine"
            + _why_no_synthetic_pairs(ctx)
        )
    return {"rows": len(ctx.pairs)}


def _why_no_synthetic_pairs(ctx: RunContext) -> str:
    """When synthetic queries were the only pairs (a zero-label run): how many were written and which filter
    dropped them, so the one line says what to change."""
    queries = (ctx.syn.report if ctx.syn is not None else {}).get("synthetic_queries") or {}
    if "candidates" not in queries:
        return ""
    failed = (queries.get("generation") or {}).get("failed", 0)
    if not queries["candidates"]:
        return f": the LLM answered none of the synthetic-query requests ({failed} failed)"
    drops = ", ".join(f"{name} {n}" for name, n in (queries.get("dropped") or {}).items() if n)
    return (
        f": the filters dropped all {queries['candidates']} synthetic queries ({drops}); sample more chunks "
        "(synthetic_queries.docs), use a stronger llm, or loosen synthetic_queries.filters"
    )


def mine(ctx: RunContext) -> dict:
    from synth.mine import backfill_for
    from synth.mine import mine as mine_pairs
    from synth.formats.rows import score_summary

    recipe, data = ctx.recipe, ctx.data
    if ctx.query_emb is None or len(ctx.query_emb) != len(data.queries):  # the probe may bring its own
        ctx.query_emb = ctx.embed_queries(data.queries.texts)
    if recipe.mine.backfill_depth != 0:
        ctx.backfill = backfill_for(
            data, ctx.pairs, ctx.corpus_emb, ctx.query_emb, ctx.searcher, recipe.mine, recipe.index.query_block
        )
    ctx.mined, stats = mine_pairs(
        data,
        ctx.pairs,
        ctx.corpus_emb,
        ctx.query_emb,
        ctx.searcher,
        recipe.mine,
        recipe.index.query_block,
        recipe.seed,
        backfill=ctx.backfill,
    )
    ctx.report["index"] = ctx.searcher.info.as_dict()
    ctx.report["mining"] = stats.as_dict()
    if stats.positive_copies or stats.positive_near_duplicates:  # a positive under another id: say so
        ctx.notices.append(
            f"the corpus holds {stats.positive_copies} exact copies and {stats.positive_near_duplicates} "
            "near-duplicates (case, spacing, punctuation) of positives under other ids, counted per query; "
            "none was mined as its query's negative"
        )
    ctx.report["scores"] = {"space": recipe.index.metric, **score_summary(ctx.mined)}
    return {"rows": len(ctx.pairs)}


def judge_context(ctx: RunContext, n_select: int):
    """The run's data as a judge that learns from it sees it (``synth.judge.base.JudgeContext``)."""
    from synth.judge.base import JudgeContext

    cfg = ctx.recipe.embed
    # the source as loaded (hashed once, at load) plus the synthetic pairs that joined it since
    joined = [[q.id, q.text, q.doc_id] for q in ctx.syn.kept] if ctx.syn is not None else []
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


def _open_judges(ctx: RunContext, n_select: int):
    from synth.judge import run as judging

    recipe = ctx.recipe
    cascade = judging.load_run_cascade(recipe)
    cache = Path(recipe.embed.cache_dir)
    ce_info = None
    if judging.needs_training(cascade):
        ce_info = judging.trained_cross_encoder(recipe, ctx.data, ctx.source_qrels, ctx.source_fp, cache)
        judging.resolve_trained_models(cascade, ce_info["path"])
    runner = judging.CascadeRunner(
        cascade,
        judging.store_dir_for(cache, ctx.source_fp, cascade),
        ctx.llm,
        ctx.prompts,
        recipe.seed,
        judge_context(ctx, n_select),
    )
    return runner, ce_info


def select(ctx: RunContext) -> dict:
    """Judge -> policy -> mix, with backfill (``synth.select.selection``); without judge or mix, the mined
    picks are published as they are."""
    from synth.select.mix import synthetic_by_pair
    from synth.formats.rows import negatives_from_mined
    from synth.select.selection import select as select_negatives

    recipe, data, pairs = ctx.recipe, ctx.data, ctx.pairs
    pool = negatives_from_mined(ctx.mined, data.corpus)
    if recipe.judge is None and recipe.mix is None:
        ctx.negatives, ctx.n = pool, recipe.mine.n_negatives
        ctx.notices += selection_notices(ctx.report)
        return {"rows": sum(len(x) for x in pool)}
    n_mined = recipe.mix.mined if recipe.mix else recipe.mine.n_negatives
    n_synthetic = recipe.mix.synthetic if recipe.mix else 0
    synthetic = (
        synthetic_by_pair(
            pairs.query_ids, pairs.positive_ids, pairs.query_rows, ctx.syn.negatives, ctx.query_emb, ctx.embed_passages
        )
        if n_synthetic
        else [[] for _ in pool]
    )
    runner = ce_info = None
    if recipe.judge is not None:
        runner, ce_info = _open_judges(ctx, n_mined + n_synthetic)
    try:
        selected = select_negatives(
            pairs,
            data,
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
            ctx.verdict_rows = runner.verdict_rows()
            ctx.judge_runner = runner
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


FLAGGED_LOUD = 0.9  # at its intended operating point a judge flags about 2/3 of what selection looks at


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


def leakage(ctx: RunContext) -> dict:
    """Count (and with ``drop`` remove) training pairs that overlap the evaluation split."""
    from synth.generate import stages as syn_stages
    from synth.leakage import check_pairs, load_eval_split, not_checked

    recipe, data, pairs = ctx.recipe, ctx.data, ctx.pairs
    cfg = recipe.leakage
    folder = cfg.path or (recipe.source.path if recipe.source.kind == "beir" else None)
    ev = load_eval_split(folder, cfg.split) if folder is not None else None
    if folder is None:
        ctx.report["leakage"] = not_checked(f"source kind {recipe.source.kind!r}: set leakage.path to a BEIR folder")
    elif ev is None:
        ctx.report["leakage"] = not_checked(f"{folder}: no qrels/{cfg.split}.tsv")
    if ev is None:
        return {"rows": 0}
    negatives = ctx.negatives if ctx.negatives is not None else [[] for _ in range(len(pairs))]
    qprov = syn_stages.query_provenance(ctx.syn)
    neg_ids = [None if negs is None else [x.id for x in negs] for negs in negatives]
    overlapping, rep = check_pairs(
        ev,
        pairs.query_ids,
        [data.queries.texts[r] for r in pairs.query_rows.tolist()],
        pairs.positive_ids,
        neg_ids,
        [qprov.get(q, {}).get("query_origin", "real") for q in pairs.query_ids],
    )
    rep["drop"] = cfg.drop
    rep["pairs_dropped"] = sum(overlapping) if cfg.drop else 0
    if cfg.drop:
        ctx.negatives = [None if o else negs for negs, o in zip(negatives, overlapping)]
    ctx.report["leakage"] = rep
    return {"rows": rep.get("pairs_checked", 0)}


def write(ctx: RunContext) -> dict:
    """``out/dataset`` (DatasetDict: triplets, extra formats, each with its ``*_provenance`` config; verdicts,
    synthetic configs) and the ``output.files``. Layout configs train as loaded (``layout_configs``)."""
    import datasets

    from synth.generate import stages as syn_stages
    from synth.formats import FORMATS
    from synth.formats.rows import build_rows, grouped_by_query
    from synth.formats.st import LAYOUTS, TRAINING_CONFIG, layout_configs, provenance_config, save_configs, text_columns

    recipe, data, pairs, tmp = ctx.recipe, ctx.data, ctx.pairs, ctx.out_tmp
    fmt, n = recipe.output.format, ctx.n
    qprov = syn_stages.query_provenance(ctx.syn, data.corpus)
    judged = ctx.judge_runner is not None
    mined_or_none = ctx.mined
    cols, counts = build_rows(fmt, n, pairs, mined_or_none, data.corpus, data.queries, qprov, ctx.negatives, judged)
    configs = layout_configs(TRAINING_CONFIG, cols, fmt, n)
    for extra in recipe.output.extra_formats:
        if LAYOUTS[extra].config in configs:
            continue
        extra_cols, _ = build_rows(
            extra, n, pairs, mined_or_none, data.corpus, data.queries, qprov, ctx.negatives, judged
        )
        configs.update(layout_configs(LAYOUTS[extra].config, extra_cols, extra, n))
    if judged and ctx.verdict_rows:
        configs["verdicts"] = datasets.Dataset.from_list(ctx.verdict_rows)
    for name, rows in syn_stages.dataset_rows(ctx.syn, data).items():
        configs[name] = datasets.Dataset.from_list(rows)
    save_configs(configs, tmp / "dataset")
    files = {}
    if recipe.output.files:
        negatives = ctx.negatives if ctx.negatives is not None else [[] for _ in range(len(pairs))]
        groups = grouped_by_query(pairs, data.corpus, data.queries, negatives, ctx.promoted)
        for name, form in FORMATS.items():  # registry order, whatever the recipe's order
            if name in recipe.output.files:
                files[name] = form.export(groups, data.corpus, tmp)
    dataset = configs[TRAINING_CONFIG]
    ctx.configs = configs
    ctx.report["output"] = {
        "format": fmt,
        "rows": len(dataset),
        **counts,
        "train_columns": text_columns(fmt, n),
        "columns": dataset.column_names,
        "provenance_columns": configs[provenance_config(TRAINING_CONFIG)].column_names,
        "configs": {k: len(v) for k, v in configs.items()},
        "files": files,
    }
    return {"rows": len(dataset)}


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict]
    applies: Callable[[object], bool]  # recipe -> does this run have the stage
    # what ``--dry-run`` does instead (the same function where it sends or needs nothing else); None: skipped.
    # A dry run plans the LLM requests: only the stages that make them, or make their inputs, run.
    dry: Callable[[RunContext], dict] | None = None


def _always(recipe) -> bool:
    return True


STAGES: tuple[Stage, ...] = (
    Stage("load", load, _always, dry=load),
    Stage("personas", personas, lambda r: r.personas is not None, dry=personas),
    Stage("synthetic_queries", synthetic_queries, lambda r: r.synthetic_queries is not None, dry=synthetic_queries),
    Stage("embed", embed, needs_index),
    Stage("index", index, needs_index),
    Stage("filter_queries", filter_queries, lambda r: r.synthetic_queries is not None, dry=all_queries),
    Stage("pairs", pairs, _always, dry=pairs),
    Stage(
        "synthetic_negatives", synthetic_negatives, lambda r: r.synthetic_negatives is not None, dry=generate_negatives
    ),
    Stage("mine", mine, lambda r: r.output.format != "pairs"),
    Stage("select", select, lambda r: r.output.format != "pairs"),
    Stage("leakage", leakage, lambda r: r.leakage is not None),
    Stage("write", write, _always),
)

# The data path the false-negative probe runs on its view of the source (no generation, nothing written).
PROBE_STAGES = ("embed", "index", "pairs", "mine", "select")


def run_stages(ctx: RunContext, names: tuple[str, ...] | None = None) -> None:
    """Run the recipe's stages (or only ``names`` of them) in order, timing each. A dry-run context
    (``open_context(recipe, dry_run=True)``, whose LLM pool sends nothing) runs each stage's ``dry``."""
    for stage in STAGES:
        fn = stage.dry if ctx.dry_run else stage.run
        if fn is not None and (names is None or stage.name in names) and stage.applies(ctx.recipe):
            with ctx.stage(stage.name) as entry:
                entry.update(fn(ctx))
