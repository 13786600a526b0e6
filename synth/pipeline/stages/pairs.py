"""``pairs``: the (query, positive) pairs of the source, synthetic ones included: what the run mines
negatives for and writes rows from."""

from __future__ import annotations

from synth.core.errors import UserError
from synth.mine import build_pairs
from synth.pipeline.context import RunContext
from synth.pipeline.stages.base import Stage, always


def run(ctx: RunContext) -> dict:

    ctx.pairs = build_pairs(ctx.data)
    if len(ctx.pairs) == 0:
        raise UserError(
            f"{getattr(ctx.recipe.source, 'path', ctx.recipe.source.kind)}: no (query, positive) pairs to mine"
            + _why_no_synthetic_pairs(ctx.report.get("synthetic_queries") or {})
        )
    return {"rows": len(ctx.pairs)}


def _why_no_synthetic_pairs(queries: dict) -> str:
    """When synthetic queries were the only pairs (a zero-label run): how many were written and which filter
    dropped them, so the one line says what to change."""
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


STAGE = Stage("pairs", run, always, reads=("data",), writes=("pairs",), dry=run)
