"""``DIR/report.html``: the run's report as one self-contained page.

Inline CSS, PNG plots embedded as base64 data URIs, no script and no external resource, so the file opens
offline and can be attached anywhere. Plots are drawn with matplotlib's Agg canvas directly (no pyplot,
so no global backend state is touched); matplotlib is imported only here, when a page is written,
because it costs about a second to import. A plot whose data is absent is replaced by one sentence.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np

from synth.core.files import atomic_write_text
from synth.publish.card import license_parts, models_used, probe_summary
from synth.publish.secrets import scrub_secrets, scrub_text

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
img{max-width:100%;height:auto;display:block;margin:.6rem 0}
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


def fn_rates(report: dict) -> list[tuple[str, float]]:
    """False-negative rates to plot: the probe's (one figure or one per method) and the share of judged
    candidates the cascade called false negatives."""
    rates: list[tuple[str, float]] = []
    probe = report.get("fn_probe")
    if isinstance(probe, dict) and isinstance(probe.get("fn_rate"), (int, float)):
        rates.append(("fn probe", float(probe["fn_rate"])))
    elif isinstance(probe, dict):
        rates += [
            (f"fn probe: {k}", float(v["fn_rate"]))
            for k, v in probe.items()
            if isinstance(v, dict) and isinstance(v.get("fn_rate"), (int, float))
        ]
    elif isinstance(probe, list):
        rates += [
            (f"fn probe: {v.get('method', v.get('name', i))}", float(v["fn_rate"]))
            for i, v in enumerate(probe)
            if isinstance(v, dict) and isinstance(v.get("fn_rate"), (int, float))
        ]
    final = (report.get("judging") or {}).get("final")
    if isinstance(final, dict):
        total = sum(int(final.get(v) or 0) for v in VERDICTS)
        if total:
            rates.append(("judge: false_negative share", int(final.get("false_negative") or 0) / total))
            rates.append(("judge: uncertain share", int(final.get("uncertain") or 0) / total))
    return rates


def judge_stages(report: dict) -> list[dict]:
    return [s for s in (report.get("judging") or {}).get("stages") or [] if isinstance(s, dict)]


def llm_stages(report: dict) -> dict[str, dict]:
    stages = (report.get("llm") or {}).get("stages") or {}
    return {
        k: v
        for k, v in stages.items()
        if isinstance(v, dict)
        and ((v.get("tokens_in") or 0) + (v.get("tokens_out") or 0) or v.get("requests_sent") or v.get("cache_hits"))
    }


def stage_seconds(report: dict) -> dict[str, float]:
    return {
        k: float(v["seconds"])
        for k, v in (report.get("stages") or {}).items()
        if isinstance(v, dict) and isinstance(v.get("seconds"), (int, float))
    }


# ---------------------------------------------------------------- plots


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # No "Software" chunk: the same report gives the same bytes whatever the matplotlib version.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _label(value) -> str:
    """A user string (a judge stage's name) as plot text: matplotlib reads ``$...$`` as maths and
    fails on bad maths, so every ``$`` is escaped."""
    return str(value).replace("$", r"\$")


def plot_scores(pos: np.ndarray, neg: np.ndarray) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    both = np.concatenate([pos, neg])
    bins = np.linspace(both.min(), both.max(), 41) if both.min() < both.max() else 10
    if len(neg):
        ax.hist(neg, bins=bins, alpha=0.6, density=True, label=f"negatives (n={len(neg)})", color="#c44e52")
    if len(pos):
        ax.hist(pos, bins=bins, alpha=0.6, density=True, label=f"positives (n={len(pos)})", color="#4c72b0")
    ax.set_xlabel("score (query, passage)")
    ax.set_ylabel("density")
    ax.legend()
    return _png(fig)


def plot_bars(labels: list[str], values: list[float], xlabel: str, fmt: str = "{:.3g}") -> str:
    fig = _figure(7.0, 0.5 + 0.4 * len(labels))
    ax = fig.add_subplot()
    y = np.arange(len(labels))
    ax.barh(y, values, color="#4c72b0")
    ax.set_yticks(y, [_label(v) for v in labels])
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    for yi, v in zip(y, values):
        ax.annotate(fmt.format(v), (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.margins(x=0.15)
    return _png(fig)


def plot_verdicts(stages: list[dict]) -> str:
    fig = _figure(7.0, 3.2)
    ax = fig.add_subplot()
    x = np.arange(len(stages))
    bottom = np.zeros(len(stages))
    for verdict in VERDICTS:
        counts = np.array([float(s.get(verdict) or 0) for s in stages])
        ax.bar(x, counts, bottom=bottom, label=verdict, color=_VERDICT_COLOURS[verdict])
        bottom += counts
    ax.set_xticks(x, [_label(s.get("stage", i)) for i, s in enumerate(stages)])
    ax.set_ylabel("candidates")
    ax.legend()
    return _png(fig)


def plot_llm(stages: dict[str, dict]) -> str:
    names = list(stages)
    costs = [stages[n].get("cost_usd") for n in names]
    has_cost = any(isinstance(c, (int, float)) and c > 0 for c in costs)
    fig = _figure(8.0 if has_cost else 7.0, 3.2)
    ax = fig.add_subplot(1, 2 if has_cost else 1, 1)
    x = np.arange(len(names))
    tin = np.array([float(stages[n].get("tokens_in") or 0) for n in names])
    tout = np.array([float(stages[n].get("tokens_out") or 0) for n in names])
    ax.bar(x, tin, label="tokens in", color="#4c72b0")
    ax.bar(x, tout, bottom=tin, label="tokens out", color="#55a868")
    ax.set_xticks(x, [_label(n) for n in names], rotation=20, ha="right")
    ax.set_ylabel("tokens")
    ax.legend()
    if has_cost:
        cx = fig.add_subplot(1, 2, 2)
        cx.bar(x, [float(c or 0) for c in costs], color="#8172b2")
        for xi, c in zip(x, costs):
            if c is None:  # the model has no price in the recipe: cost unknown, not zero
                cx.annotate("no price", (xi, 0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
        cx.set_xticks(x, [_label(n) for n in names], rotation=20, ha="right")
        cx.set_ylabel("cost (USD)")
    return _png(fig)


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


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _skip(sentence: str) -> str:
    return f'<p class="skip">{html.escape(sentence)}</p>'


def _judge_section(clean: dict) -> list[str]:
    """Verdicts per judge stage (plot and table), the learned judges' held-out quality, final verdicts, policy."""
    parts: list[str] = []
    parts.append("<h2>Judge verdicts per stage</h2>")
    stages = judge_stages(clean)
    if stages:
        parts.append(_img(plot_verdicts(stages), "verdict counts per judge stage"))
        cols = ["stage", "kind", "candidates", "reused", "judged", *VERDICTS, "failed", "seconds"]
        parts.append(_table(cols, [[s.get(c) for c in cols] for s in stages]))
        learned = [(s["stage"], s["model_report"]) for s in stages if isinstance(s.get("model_report"), dict)]
        if learned:  # a judge that learns from the source (fn_risk): its operating point, or why it fell back
            cols = ["stage", "mode", "training queries", "hidden positives", "held-out AUC", "cut-off", "target"]
            cols += ["est. FN x top-n", "est. rank x limit"]
            rows = []
            for n, r in learned:
                est = r.get("estimate") or {}
                auc = (r.get("heldout") or {}).get("auc")
                target = r.get("target_used", r.get("target_fn_ratio"))
                rows.append([n, r.get("mode"), r.get("training_queries"), r.get("hidden_positives"), auc])
                rows[-1] += [r.get("threshold"), target, est.get("fn_ratio"), est.get("rank_vs_oracle")]
            parts.append(_table(cols, rows))
            parts += [f"<p>{_e(n)}: {_e(r.get('summary') or r.get('why') or '')}</p>" for n, r in learned]
    else:
        parts.append(_skip("No judge stages in this run."))
    judging = clean.get("judging") or {}
    for sub in ("final", "policy"):
        if isinstance(judging.get(sub), dict):
            parts += [f"<p>{_e(sub)}:</p>", _table(["", "value"], list(judging[sub].items()))]

    return parts


def render_report(report: dict, triplets=None) -> str:
    clean, secrets = scrub_secrets(report)
    recipe = clean.get("recipe") or {}
    name = recipe.get("name", "synth run")
    parts = [f"<h1>{_e(name)}: run report</h1>"]
    if clean.get("notices"):  # what the run must not keep quiet, before anything else
        parts += ["<h2>Warnings</h2>", "<ul>", *[f"<li>{_e(line)}</li>" for line in clean["notices"]], "</ul>"]
    output = clean.get("output") or {}
    key = [
        ["seed", clean.get("seed", recipe.get("seed"))],
        ["started at", clean.get("started_at")],
        ["seconds", clean.get("seconds")],
        ["format", output.get("format")],
        ["rows", output.get("rows")],
        ["pairs", output.get("pairs")],
        ["negatives", output.get("negatives")],
        ["pairs short of negatives (dropped)", output.get("short_pairs_dropped")],
        ["sampler", ((recipe.get("mine") or {}).get("sampler") or {}).get("kind")],
        ["source", f"{(recipe.get('source') or {}).get('kind')}: {(recipe.get('source') or {}).get('path')}"],
    ]
    parts += ["<h2>Key figures</h2>", _table(["", "value"], [r for r in key if r[1] is not None])]
    for section in ("mix", "selection", "leakage"):
        if isinstance(clean.get(section), dict) and clean[section]:
            parts += [f"<h2>{_e(section.capitalize())}</h2>", _table(["", "value"], list(clean[section].items()))]

    parts.append("<h2>Scores</h2>")
    pos, neg = score_arrays(triplets)
    if len(pos) + len(neg):
        parts.append(_img(plot_scores(pos, neg), "histograms of positive and negative scores"))
    else:
        parts.append(_skip("No score histogram: no triplets dataset with positive_score / negative_scores given."))
    scores = clean.get("scores") or {}
    described = [(k, v) for k, v in scores.items() if isinstance(v, dict)]
    if described:
        stat_keys = ["count", "mean", "min", "p5", "median", "p95", "max"]
        parts.append(_table(["scores", *stat_keys], [[k, *(v.get(s) for s in stat_keys)] for k, v in described]))

    parts.append("<h2>False negatives</h2>")
    rates = fn_rates(clean)
    if rates:
        parts.append(_img(plot_bars([r[0] for r in rates], [r[1] for r in rates], "rate"), "false-negative rates"))
        probe = clean.get("fn_probe")
        if isinstance(probe, dict):
            parts.append(f"<p>{_e(probe_summary(probe))}</p>")
            parts.append(_table(["", "value"], list(probe.items())))
    else:
        parts.append(_skip("No false-negative figures: the run has no fn_probe and no judge."))

    parts += _judge_section(clean)

    parts.append("<h2>LLM tokens and cost per stage</h2>")
    used = llm_stages(clean)
    if used:
        parts.append(_img(plot_llm(used), "LLM tokens and cost per stage"))
        cols = ["requests_sent", "cache_hits", "tokens_in", "tokens_out", "failed", "cost_usd"]
        parts.append(_table(["stage", *cols], [[n, *(s.get(c) for c in cols)] for n, s in used.items()]))
    else:
        parts.append(_skip("No LLM requests in this run."))

    parts.append("<h2>Timings per stage</h2>")
    seconds = stage_seconds(clean)
    if seconds:
        parts.append(_img(plot_bars(list(seconds), list(seconds.values()), "seconds", "{:.2f}s"), "seconds per stage"))
        parts.append(
            _table(
                ["stage", "rows", "seconds"],
                [[k, (clean["stages"][k] or {}).get("rows"), v] for k, v in seconds.items()],
            )
        )
    else:
        parts.append(_skip("No stage timings in the report."))

    parts.append("<h2>Models and licences</h2>")
    parts.append(
        _table(["role", "model", "detail"], [[m["role"], m["model"], m["detail"]] for m in models_used(clean)])
    )
    parts.append(_table(["part", "licence"], list(license_parts(clean).items())))
    env = clean.get("environment") or {}
    if env:
        parts += ["<h2>Environment</h2>", _table(["", "version"], [[k, v] for k, v in env.items() if v is not None])]

    body = "\n".join(parts)
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(name)}: synth report</title>'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
    # No scheme anywhere: the page loads nothing and names endpoints only as host/path text.
    return _SCHEME.sub("", scrub_text(page, secrets))


def write_report_html(out_dir: Path, report: dict, triplets=None) -> Path:
    """Write ``out_dir/report.html`` atomically; returns its path. ``triplets`` (a Dataset, or a DatasetDict
    with a ``triplets`` config) feeds the score histograms."""
    out_dir = Path(out_dir)
    text = render_report(report, triplets)
    return atomic_write_text(out_dir / PAGE, text)
