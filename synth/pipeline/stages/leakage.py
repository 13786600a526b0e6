"""``leakage``: count (and with ``leakage.drop`` remove) training pairs that overlap the evaluation split
(``synth.leakage``): the same query text, or a positive or negative that is one of its positives."""

from __future__ import annotations

from synth.leakage import check_pairs, load_eval_split, not_checked
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage
from synth.pipeline.synthetic_rows import query_provenance


def run(ctx: RunContext) -> dict:

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
    qprov = query_provenance(ctx.synthetic_queries)
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


STAGE = Stage(
    "leakage",
    run,
    lambda recipe: recipe.leakage is not None,
    reads=("data", "pairs"),
    optional=("negatives", "synthetic_queries"),
    writes=("negatives",),
    sections=("leakage",),
)
