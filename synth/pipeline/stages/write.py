"""``write``: ``out/dataset`` (a DatasetDict: the training config, extra formats, each with its
``*_provenance`` config; verdicts; the synthetic configs) and the ``output.files``. Layout configs train as
loaded (``synth.formats.st.layout_configs``)."""

from __future__ import annotations

from synth.formats import FORMATS
from synth.formats.rows import build_rows, grouped_by_query
from synth.formats.st import LAYOUTS, TRAINING_CONFIG, layout_configs, provenance_config, save_configs, text_columns
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, always
from synth.pipeline.synthetic_rows import dataset_rows, query_provenance


def run(ctx: RunContext) -> dict:
    import datasets

    recipe, data, pairs, tmp = ctx.recipe, ctx.data, ctx.pairs, ctx.out_tmp
    configs, counts = _training_configs(ctx)
    if ctx.judged and ctx.verdict_rows:
        configs["verdicts"] = datasets.Dataset.from_list(ctx.verdict_rows)
    synthetic = dataset_rows(
        ctx.personas, ctx.query_candidates, ctx.synthetic_queries, ctx.dropped_by, ctx.synthetic_negatives, data
    )
    for name, rows in synthetic.items():
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
    fmt = recipe.output.format
    ctx.report["output"] = {
        "format": fmt,
        "rows": len(dataset),
        **counts,
        "train_columns": text_columns(fmt, ctx.n),
        "columns": dataset.column_names,
        "provenance_columns": configs[provenance_config(TRAINING_CONFIG)].column_names,
        "configs": {k: len(v) for k, v in configs.items()},
        "files": files,
    }
    return {"rows": len(dataset)}


def _training_configs(ctx: RunContext) -> tuple[dict, dict]:
    """The training config in the recipe's format and one per extra format not already written."""

    data, fmt, n = ctx.data, ctx.recipe.output.format, ctx.n
    qprov = query_provenance(ctx.synthetic_queries, data.corpus)

    def rows(layout: str):
        return build_rows(layout, n, ctx.pairs, ctx.mined, data.corpus, data.queries, qprov, ctx.negatives, ctx.judged)

    cols, counts = rows(fmt)
    configs = layout_configs(TRAINING_CONFIG, cols, fmt, n)
    for extra in ctx.recipe.output.extra_formats:
        if LAYOUTS[extra].config not in configs:
            configs.update(layout_configs(LAYOUTS[extra].config, rows(extra)[0], extra, n))
    return configs, counts


STAGE = Stage(
    "write",
    run,
    always,
    reads=("data", "pairs"),
    optional=(
        "mined",
        "negatives",
        "promoted",
        "n",
        "judged",
        "verdict_rows",
        "personas",
        "query_candidates",
        "synthetic_queries",
        "dropped_by",
        "synthetic_negatives",
    ),
    writes=("configs",),
    sections=("output",),
)
