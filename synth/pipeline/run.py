"""The runner: prepare the output folder, run the stages (``synth.pipeline.stages.STAGES``) over one
``RunContext``, then write the report, the card and the HTML page, and rename the folder into place.

Output goes to a sibling temporary folder that is renamed onto ``--out`` only when complete
(``synth.core.outdir``: an existing folder is replaced only if synth wrote it), so a crash never leaves a
half-written dataset. The embedding cache (``embed.py``), the LLM request cache
and the verdict store make a killed run resume without redoing finished work.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Sequence

from synth.core import outdir
from synth.core.files import json_default
from synth.leakage import not_checked
from synth.pipeline.context import RunContext, open_context
from synth.pipeline.report import environment, licenses
from synth.report.judging import JudgeStage
from synth.report.run import Leakage, LeakageChecked, RunReport, check_report
from synth.pipeline.stages import needs_encoder, run_stages
from synth.pipeline.stages.select import load_run_cascade
from synth.recipe import Recipe

log = logging.getLogger("synth.pipeline.run")

REPORT = "report.json"


def run_recipe(recipe: Recipe, out: str | Path) -> dict:
    """Run every stage and write ``out/dataset`` (a DatasetDict of named configs), ``out/report.json``,
    the card and the HTML report (and the files ``output.files`` asks for)."""

    out = Path(out).resolve()
    started = time.time()
    if recipe.judge is not None:
        load_run_cascade(recipe)  # a bad cascade file fails before any work
    tmp = outdir.prepare(out, "run")
    ctx = None
    try:
        ctx = open_context(recipe)
        ctx.out_tmp = tmp
        run_stages(ctx)
        finish(ctx, started)
        outdir.publish(tmp, out, "run")
        return ctx.report
    except BaseException:
        outdir.discard(tmp)
        raise
    finally:
        if ctx is not None:
            ctx.close()


def zero_rows_reason(report: RunReport) -> str:
    """Why a run wrote no training row, from its report's counts (one clause, for the CLI's one line)."""
    out = report.output
    # the causes that empty a run on their own come first: a leakage drop, a judge that failed closed
    parts = leakage_drop_reason(report.leakage, out.pairs)
    parts += judge_failure_reasons(report.judging.stages if report.judging is not None else [])
    parts.append(f"{out.pairs} pairs")
    if out.short_pairs_dropped:
        n = (report.recipe.get("mine") or {}).get("n_negatives", "n")  # the resolved recipe is a dict
        parts.append(f"{out.short_pairs_dropped} dropped short of {n} negatives")
    if report.mining is not None and report.mining.filtered_candidates:
        parts.append(f"{report.mining.filtered_candidates} candidates removed by filters")
    if report.selection is not None:
        dropped = {k: v for k, v in report.selection.model_dump().items() if "drop" in k and isinstance(v, int) and v}
        parts += [f"selection {k} {v}" for k, v in dropped.items()]
    if not out.pairs:
        parts.append("no (query, positive) pair in the source")
    return ", ".join(parts) or "no rows selected"


def leakage_drop_reason(leakage: Leakage, pairs: int | None) -> list[str]:
    if not isinstance(leakage, LeakageChecked) or not leakage.pairs_dropped:
        return []
    dropped = leakage.pairs_dropped
    share = "all " if pairs is not None and dropped >= pairs else ""
    return [
        f"{share}{dropped} pairs dropped by the leakage check against {leakage.folder} "
        f"(split {leakage.split}, leakage.drop)"
    ]


def judge_failure_reasons(stages: Sequence[JudgeStage]) -> list[str]:
    """A judge stage that could not decide (an endpoint down, replies it could not parse) leaves its
    candidates uncertain, and the policy drops them: name it, or a zero-row run reads like strict judges."""
    out = []
    for st in stages:
        if st.failed:
            share = "all" if st.failed >= st.candidates else f"{st.failed} of"
            out.append(f"the judge stage {st.stage!r} failed closed on {share} {st.candidates} candidates")
    return out


def finish(ctx: RunContext, started: float) -> None:
    """The run's report sections, then ``report.json``, the card and ``report.html`` in the temp folder."""
    from synth.publish.card import write_card
    from synth.publish.paths import public_paths
    from synth.publish.report import write_report_html

    recipe, report = ctx.recipe, ctx.report
    if needs_encoder(recipe):
        report["embedding"] = ctx.embed_stats.as_dict()
    report.setdefault("leakage", not_checked("no leakage section in the recipe"))
    report["llm"] = ctx.llm.accounting.report()  # generation and LLM judges: one pool, one accounting
    report["licenses"] = licenses(recipe, ctx.personas)
    report["notices"] = ctx.notices
    report["stages"] = ctx.timings
    report["engine"] = ctx.engine_report()
    report["environment"] = environment()
    report["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    report["seconds"] = round(time.time() - started, 3)
    # The three files below are published: no local path in any of them (synth.publish.paths).
    public = public_paths(report, getattr(recipe, "_recipe_dir", None), recipe.embed.cache_dir)
    report.clear()
    report.update(public)
    # the typed report (synth.report.run.RunReport): a missing or unknown key is a bug. Built from the JSON text so
    # numpy numbers and paths arrive as JSON has them; what is written is the model's own dump of what was set.
    typed = check_report(json.dumps(report, default=json_default))
    write_card(ctx.out_tmp, typed, {name: len(ds) for name, ds in ctx.configs.items()})
    write_report_html(ctx.out_tmp, typed, triplets=ctx.configs)  # the scores are in triplets_provenance
    (ctx.out_tmp / REPORT).write_text(typed.model_dump_json(indent=2, exclude_unset=True))


def plan_recipe(recipe: Recipe) -> dict:
    """``synth run --dry-run``: the LLM requests each stage would send, token upper bounds and cost. Runs the
    stages' dry-run versions (``Stage.dry``) over a planning LLM pool (``synth.llm.plan``): loads the
    source and reads the request cache; sends nothing and writes nothing."""
    if recipe.llm is None:  # no stage can send a request
        return {"stages": [], "totals": {"requests": 0, "to_send": 0}}
    ctx = open_context(recipe, dry_run=True)
    try:
        run_stages(ctx)
    finally:
        ctx.close()
    rows = ctx.llm.rows
    totals: dict = {
        k: sum(r[k] for r in rows)
        for k in ("requests", "cached", "to_send", "tokens_in_upper", "tokens_out_upper", "tokens_in_estimate")
    }
    costs = [r["cost_usd_upper"] for r in rows]
    totals["cost_usd_upper"] = (
        None
        if any(c is None for c in costs) and any(r["to_send"] for r in rows)
        else round(sum(c or 0.0 for c in costs), 6)
    )
    return {"stages": rows, "totals": totals, "budget": recipe.budget.model_dump() if recipe.budget else None}
