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

from synth.core import outdir
from synth.core.files import json_default
from synth.leakage import not_checked
from synth.pipeline.context import RunContext, open_context
from synth.pipeline.report import environment, licenses
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


def zero_rows_reason(report: dict) -> str:
    """Why a run wrote no training row, from its report's counts (one clause, for the CLI's one line)."""
    out, mining = report.get("output") or {}, report.get("mining") or {}
    # the causes that empty a run on their own come first: a leakage drop, a judge that failed closed
    parts = leakage_drop_reason(report.get("leakage") or {}, out.get("pairs"))
    parts += judge_failure_reasons((report.get("judging") or {}).get("stages") or [])
    if out.get("pairs") is not None:
        parts.append(f"{out['pairs']} pairs")
    if out.get("short_pairs_dropped"):
        n = (report.get("recipe") or {}).get("mine", {}) or {}
        parts.append(f"{out['short_pairs_dropped']} dropped short of {n.get('n_negatives', 'n')} negatives")
    if mining.get("filtered_candidates"):
        parts.append(f"{mining['filtered_candidates']} candidates removed by filters")
    selection = report.get("selection") or {}
    if isinstance(selection, dict):
        dropped = {k: v for k, v in selection.items() if "drop" in k and isinstance(v, int) and v}
        parts += [f"selection {k} {v}" for k, v in dropped.items()]
    if not out.get("pairs"):
        parts.append("no (query, positive) pair in the source")
    return ", ".join(parts) or "no rows selected"


def leakage_drop_reason(leakage: dict, pairs: int | None) -> list[str]:
    dropped = leakage.get("pairs_dropped") or 0
    if not dropped:
        return []
    share = "all " if pairs is not None and dropped >= pairs else ""
    return [
        f"{share}{dropped} pairs dropped by the leakage check against {leakage.get('folder')} "
        f"(split {leakage.get('split')}, leakage.drop)"
    ]


def judge_failure_reasons(stages: list[dict]) -> list[str]:
    """A judge stage that could not decide (an endpoint down, replies it could not parse) leaves its
    candidates uncertain, and the policy drops them: name it, or a zero-row run reads like strict judges."""
    out = []
    for st in stages:
        failed, seen = st.get("failed") or 0, st.get("candidates") or 0
        if failed:
            share = "all" if failed >= seen else f"{failed} of"
            out.append(f"the judge stage {st.get('stage')!r} failed closed on {share} {seen} candidates")
    return out


def finish(ctx: RunContext, started: float) -> None:
    """The run's report sections, then ``report.json``, the card and ``report.html`` in the temp folder."""
    from synth.pipeline.report_model import check_report
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
    write_card(ctx.out_tmp, report, {name: len(ds) for name, ds in ctx.configs.items()})
    write_report_html(ctx.out_tmp, report, triplets=ctx.configs)  # the scores are in triplets_provenance
    text = json.dumps(report, indent=2, default=json_default)
    check_report(text)  # the typed report (report_model.RunReport): a missing or unknown key is a bug
    (ctx.out_tmp / REPORT).write_text(text)


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
