"""``DIR/report.html``: the run's report as one self-contained page.

Inline CSS, plots as inline SVG (``synth/publish/svg.py``), no script and no external resource, so the file
opens offline and can be attached anywhere. A plot whose data is absent is replaced by one sentence.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from synth.core.files import atomic_write_text
from synth.publish import svg
from synth.report.generation import StageUsage
from synth.report.judging import JudgeStage, RiskModelReport
from synth.report.run import STAT_KEYS, RunReport
from synth.publish.card import license_parts, models_used
from synth.publish.secrets import scrub_report, scrub_text

PAGE = "report.html"
VERDICTS = ("negative", "false_negative", "uncertain")
_VERDICT_COLOURS = {"negative": "#4c72b0", "false_negative": "#c44e52", "uncertain": "#dd8452"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:60rem;color:#222;
padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}th{background:#f3f3f3}
td.n{text-align:right;font-variant-numeric:tabular-nums}
figure.plot{margin:.6rem 0}figure.plot svg{max-width:100%;height:auto;display:block}
p.skip{color:#777;font-style:italic}code{background:#f5f5f5;padding:0 .2rem}
"""
_SCHEME = re.compile(r"\b[a-z][a-z0-9+.\-]*://", re.IGNORECASE)


# ---------------------------------------------------------------- data from the inputs


def score_arrays(triplets) -> tuple[np.ndarray, np.ndarray]:
    """(positive scores, negative scores) from a triplets Dataset's provenance columns; finite values only.
    Reads the two columns through Arrow, so a large dataset never becomes Python lists."""
    empty = np.zeros(0, dtype=np.float64)
    if triplets is None:
        return empty, empty
    if hasattr(triplets, "keys"):  # configs by name: the scores are in triplets_provenance (older runs: triplets)
        name = next((c for c in ("triplets_provenance", "triplets") if c in triplets.keys()), None)
        if name is None:
            return empty, empty
        triplets = triplets[name]
    cols = [c for c in ("positive_score", "negative_scores") if c in triplets.column_names]
    if not cols or len(triplets) == 0:
        return empty, empty
    import pyarrow.compute as pc

    table = triplets.select_columns(cols).with_format("arrow")[:]
    pos = neg = empty
    if "positive_score" in cols:
        pos = table.column("positive_score").to_numpy().astype(np.float64)
    if "negative_scores" in cols:
        neg = pc.list_flatten(table.column("negative_scores")).to_numpy().astype(np.float64)
    return pos[np.isfinite(pos)], neg[np.isfinite(neg)]


def fn_rates(report: RunReport) -> list[tuple[str, float]]:
    """False-negative shares to plot: of the candidates the cascade judged, those it called false negatives
    and those it left uncertain."""
    if report.judging is None:
        return []
    final = report.judging.final
    total = final.negative + final.false_negative + final.uncertain
    if not total:
        return []
    return [
        ("judge: false_negative share", final.false_negative / total),
        ("judge: uncertain share", final.uncertain / total),
    ]


def judge_stages(report: RunReport) -> list[JudgeStage]:
    return report.judging.stages if report.judging is not None else []


def llm_stages(report: RunReport) -> dict[str, StageUsage]:
    """The LLM stages that sent, reused or counted anything."""
    return {k: v for k, v in report.llm.stages.items() if v.tokens_in + v.tokens_out or v.requests_sent or v.cache_hits}


def stage_seconds(report: RunReport) -> dict[str, float]:
    return {k: float(v.seconds) for k, v in report.stages.items()}


# ---------------------------------------------------------------- plots


def plot_scores(pos: np.ndarray, neg: np.ndarray) -> str:
    series = [("negatives", neg, "#c44e52"), ("positives", pos, "#4c72b0")]
    return svg.figure([svg.histogram(series, "score (query, passage)")], "histograms of positive and negative scores")


def plot_bars(labels: list[str], values: list[float], xlabel: str, label: str, fmt: str = "{:.3g}") -> str:
    return svg.figure([svg.bars(labels, values, xlabel, fmt)], label)


def plot_verdicts(stages: list[JudgeStage]) -> str:
    layers = [(v, [float(getattr(s, v)) for s in stages], _VERDICT_COLOURS[v]) for v in VERDICTS]
    return svg.figure([svg.columns([s.stage for s in stages], layers, "candidates")], "verdict counts per judge stage")


def plot_llm(stages: dict[str, StageUsage]) -> str:
    names = list(stages)
    tokens = [
        ("tokens in", [float(stages[n].tokens_in) for n in names], "#4c72b0"),
        ("tokens out", [float(stages[n].tokens_out) for n in names], "#55a868"),
    ]
    costs = [stages[n].cost_usd for n in names]
    if not any(isinstance(c, (int, float)) and c > 0 for c in costs):
        return svg.figure([svg.columns(names, tokens, "tokens")], "LLM tokens per stage")
    # a model with no price in the recipe: cost unknown, not zero
    notes = ["no price" if c is None else "" for c in costs]
    cost = [("cost (USD)", [float(c or 0) for c in costs], "#8172b2")]
    panels = [svg.columns(names, tokens, "tokens", 420.0), svg.columns(names, cost, "cost (USD)", 300.0, notes)]
    return svg.figure(panels, "LLM tokens and cost per stage")


# ---------------------------------------------------------------- page


def _e(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        value = json.dumps(value, default=str)
    return html.escape("" if value is None else str(value))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_e(v)}</td>'
            if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{_e(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _plot(svg_markup: str) -> str:
    return f'<figure class="plot">{svg_markup}</figure>'


def _skip(sentence: str) -> str:
    return f'<p class="skip">{html.escape(sentence)}</p>'


def _learned_table(learned: list[tuple[str, RiskModelReport]]) -> list[str]:
    """A judge that learns from the source (fn_risk): its operating point, or why it fell back."""
    cols = ["stage", "mode", "training queries", "hidden positives", "held-out AUC", "cut-off", "target"]
    cols += ["est. FN x top-n", "est. rank x limit"]
    rows = []
    for n, r in learned:
        est, auc = r.estimate, r.heldout.auc if r.heldout is not None else None
        target = r.target_used if r.target_used is not None else r.target_fn_ratio
        rows.append([n, r.mode, r.training_queries, r.hidden_positives, auc, r.threshold, target])
        rows[-1] += [est.fn_ratio, est.rank_vs_oracle] if est is not None else [None, None]
    return [_table(cols, rows), *[f"<p>{_e(n)}: {_e(r.summary or r.why or '')}</p>" for n, r in learned]]


def _judge_section(clean: RunReport) -> list[str]:
    """Verdicts per judge stage (plot and table), the learned judges' held-out quality, final verdicts, policy."""
    parts: list[str] = ["<h2>Judge verdicts per stage</h2>"]
    stages = judge_stages(clean)
    if stages:
        parts.append(_plot(plot_verdicts(stages)))
        cols = ["stage", "kind", "candidates", "reused", "judged", *VERDICTS, "failed", "seconds"]
        parts.append(_table(cols, [[getattr(s, c) for c in cols] for s in stages]))
        learned = [(s.stage, s.model_report) for s in stages if s.model_report is not None]
        if learned:
            parts += _learned_table(learned)
    else:
        parts.append(_skip("No judge stages in this run."))
    if clean.judging is not None:
        parts += ["<p>final:</p>", _table(["", "value"], list(clean.judging.final.model_dump().items()))]
        parts += ["<p>policy:</p>", _table(["", "value"], list(clean.judging.policy.items()))]
    return parts


def _key_figures(clean: RunReport) -> list[str]:
    recipe, output = clean.recipe, clean.output
    source = recipe.get("source") or {}
    key = [
        ["seed", clean.seed],
        ["started at", clean.started_at],
        ["seconds", clean.seconds],
        ["format", output.format],
        ["rows", output.rows],
        ["pairs", output.pairs],
        ["negatives", output.negatives],
        ["pairs short of negatives (dropped)", output.short_pairs_dropped],
        ["sampler", ((recipe.get("mine") or {}).get("sampler") or {}).get("kind")],
        ["source", f"{source.get('kind')}: {source.get('path')}"],
    ]
    parts = ["<h2>Key figures</h2>", _table(["", "value"], [r for r in key if r[1] is not None])]
    for title, section in (("Mix", clean.mix), ("Selection", clean.selection), ("Leakage", clean.leakage)):
        if section is not None:
            parts += [f"<h2>{_e(title)}</h2>", _table(["", "value"], list(section.model_dump().items()))]
    return parts


def _scores_section(clean: RunReport, triplets) -> list[str]:
    parts = ["<h2>Scores</h2>"]
    pos, neg = score_arrays(triplets)
    if len(pos) + len(neg):
        parts.append(_plot(plot_scores(pos, neg)))
    else:
        parts.append(_skip("No score histogram: no triplets dataset with positive_score / negative_scores given."))
    if clean.scores is not None:
        described = [(k, getattr(clean.scores, k)) for k in ("negative", "positive", "positive_minus_negative")]
        rows = [[k, *(getattr(v, s) for s in STAT_KEYS)] for k, v in described]
        parts.append(_table(["scores", *STAT_KEYS], rows))
    parts.append("<h2>False negatives</h2>")
    rates = fn_rates(clean)
    if rates:
        parts.append(_plot(plot_bars([r[0] for r in rates], [r[1] for r in rates], "rate", "false-negative rates")))
    else:
        parts.append(_skip("No false-negative figures: the run has no fn_probe and no judge."))
    return parts


def _usage_and_timings(clean: RunReport) -> list[str]:
    parts = ["<h2>LLM tokens and cost per stage</h2>"]
    used = llm_stages(clean)
    if used:
        parts.append(_plot(plot_llm(used)))
        cols = ["requests_sent", "cache_hits", "tokens_in", "tokens_out", "failed", "cost_usd"]
        parts.append(_table(["stage", *cols], [[n, *(getattr(s, c) for c in cols)] for n, s in used.items()]))
    else:
        parts.append(_skip("No LLM requests in this run."))
    parts.append("<h2>Timings per stage</h2>")
    seconds = stage_seconds(clean)
    if seconds:
        timings = plot_bars(list(seconds), list(seconds.values()), "seconds", "seconds per stage", "{:.2f}s")
        parts.append(_plot(timings))
        rows = [[k, clean.stages[k].rows, v] for k, v in seconds.items()]
        parts.append(_table(["stage", "rows", "seconds"], rows))
    else:
        parts.append(_skip("No stage timings in the report."))
    return parts


def _models_and_licences(clean: RunReport) -> list[str]:
    models = [[m["role"], m["model"], m["detail"]] for m in models_used(clean)]
    parts = ["<h2>Models and licences</h2>", _table(["role", "model", "detail"], models)]
    parts.append(_table(["part", "licence"], list(license_parts(clean).items())))
    env = [[k, v] for k, v in clean.environment.model_dump().items() if v is not None]
    return parts + ["<h2>Environment</h2>", _table(["", "version"], env)]


def render_report(report: RunReport, triplets=None) -> str:
    clean, secrets = scrub_report(report)
    name = clean.recipe.get("name", "synth run")
    parts = [f"<h1>{_e(name)}: run report</h1>"]
    if clean.notices:  # what the run must not keep quiet, before anything else
        parts += ["<h2>Warnings</h2>", "<ul>", *[f"<li>{_e(line)}</li>" for line in clean.notices], "</ul>"]
    parts += _key_figures(clean)
    parts += _scores_section(clean, triplets)
    parts += _judge_section(clean)
    parts += _usage_and_timings(clean)
    parts += _models_and_licences(clean)
    body = "\n".join(parts)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(name)}: synth report</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    # No scheme anywhere: the page loads nothing and names endpoints only as host/path text.
    return _SCHEME.sub("", scrub_text(page, secrets))


def write_report_html(out_dir: Path, report: RunReport, triplets=None) -> Path:
    """Write ``out_dir/report.html`` atomically; returns its path. ``triplets`` (a Dataset, or a DatasetDict
    with a ``triplets`` config) feeds the score histograms."""
    out_dir = Path(out_dir)
    text = render_report(report, triplets)
    return atomic_write_text(out_dir / PAGE, text)
