"""What a stage is: a function over the ``RunContext`` with its contract written beside it, the context fields
it ``reads`` and ``writes`` and the report ``sections`` it fills. ``run_stages`` holds every stage to its
declaration as it runs (a field or section it did not declare fails the run as a bug), and
``tests/unit/test_pipeline_stages.py`` checks the chain: each field a stage reads is opened with the context
or written by a stage before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from synth.pipeline.context import RunContext
    from synth.recipe import Recipe


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[RunContext], dict]  # returns its figures for the timing table: ``rows`` and any extras
    applies: Callable[[Recipe], bool]  # does this recipe's run have the stage
    reads: tuple[str, ...] = ()  # RunContext fields it reads (besides those ``open_context`` opens)
    # fields it reads when a stage before it wrote them, and does without otherwise (empty or None by default)
    optional: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()  # RunContext fields it sets
    sections: tuple[str, ...] = ()  # report.json sections it writes (each a ``RunReport`` field)
    # what ``--dry-run`` does instead (the same function where it sends or needs nothing else); None: skipped.
    # A dry run plans the LLM requests: only the stages that make them, or make their inputs, run.
    dry: Callable[[RunContext], dict] | None = None


def always(recipe: Recipe) -> bool:
    return True


def needs_index(recipe: Recipe) -> bool:
    return recipe.output.format != "pairs" or recipe.synthetic_queries is not None


def needs_encoder(recipe: Recipe) -> bool:
    return needs_index(recipe) or recipe.synthetic_negatives is not None


def mines(recipe: Recipe) -> bool:
    return recipe.output.format != "pairs"


def client_defaults(recipe: Recipe) -> dict:
    """Backend-level sampling defaults, sent with (and so keyed into) every generation request."""
    return {"temperature": recipe.llm.temperature, "top_p": recipe.llm.top_p} if recipe.llm else {}
