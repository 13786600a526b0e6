"""synth: training data for dense retrievers.

The Python API: each function does what its command does (``synth run``, ``synth run --dry-run``,
``synth fn-probe``, ``synth relabel``) and returns its report as a dict instead of printing::

    import synth

    report = synth.run("recipes/resa2.yaml", out="out/resa2", overrides={"mine.n_negatives": 3})
    plan = synth.plan("recipes/resa2_plus_synthetic.yaml")   # the dry run: nothing sent, nothing written
    probe = synth.fn_probe("recipes/resa2.yaml")              # out=None: nothing written
    relabelled = synth.relabel("out/resa2/dataset", "judges/fn_risk.yaml", out="out/relabelled")

``recipe`` is a path or a ``synth.recipe.Recipe``; ``overrides`` is ``{"dotted.key": value}``, as
``--set dotted.key=value``. An error the user can fix raises ``synth.core.errors.UserError`` (one line).
Everything is imported on first call, so ``import synth`` stays cheap. The package's layout: ``core``
(what every feature shares), one package per stage or feature (``sources``, ``generate``, ``samplers``,
``judge``, ``select``, ``formats``, ``publish``, ``evaluate``, ``llm``) and ``pipeline``, which runs them
as one list of stages; a new public function goes here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from synth.recipe import Recipe

__all__ = ["run", "plan", "fn_probe", "relabel", "load_recipe"]


def __getattr__(name: str) -> Any:
    # ``synth.__version__`` on first use (``synth.core.version``): reading pyproject.toml or the package
    # metadata at import would make every ``import synth`` pay for it
    if name == "__version__":
        from synth.core.version import version

        return version()
    raise AttributeError(f"module 'synth' has no attribute {name!r}")


def load_recipe(recipe: "str | Path | Recipe", overrides: Mapping[str, Any] | None = None) -> "Recipe":
    """A validated, resolved recipe from a path (or a ``Recipe``), with ``overrides`` applied.

    A ``Recipe`` object is validated again, whole, as its YAML would be: fields assigned after it was
    loaded (``recipe.mine.n_negatives = 0``) skip pydantic's checks, and a run must never start on what
    ``synth validate`` would refuse."""
    import json

    from synth.core.errors import UserError
    from synth.core.yamlio import validate
    from synth.recipe import Recipe, apply_overrides, load_recipe as load, resolve_paths

    # JSON is YAML: every value reaches the recipe as --set would give it (a string stays a string)
    sets = [f"{key}={json.dumps(value)}" for key, value in (overrides or {}).items()]
    if not isinstance(recipe, Recipe):
        return load(Path(recipe), sets)
    base = Path(getattr(recipe, "_recipe_dir", None) or Path.cwd())
    where = base / f"{recipe.name}.yaml"
    # exclude_unset: what the recipe (or an assignment) set stays set and a default stays a default, which
    # some checks tell apart (``mine.corpus_limits`` reports a clamp only of a value the recipe set).
    # Warnings off: a value of the wrong type is reported by the validation below, in one line.
    try:
        raw = _with_kinds(
            recipe.model_dump(mode="json", exclude_unset=True, warnings=False),
            recipe.model_dump(mode="json", warnings=False),
        )
    except Exception as e:  # noqa: BLE001 - a value that is not data at all (an object assigned to a field)
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"{where}: the Recipe object holds a value that is not YAML data: {first}") from None
    return resolve_paths(validate(Recipe, apply_overrides(raw, sets), str(where)), base, where)


def _with_kinds(unset: Any, full: Any) -> Any:
    """``unset`` with every ``kind`` of ``full`` put back: a config built in Python (``BeirSource(path=..)``)
    leaves its ``kind`` at the default, and a union of configs cannot be read back without it."""
    if isinstance(unset, dict) and isinstance(full, dict):
        out = {key: _with_kinds(value, full.get(key)) for key, value in unset.items()}
        if "kind" in full and "kind" not in out:
            out = {"kind": full["kind"], **out}
        return out
    if isinstance(unset, list) and isinstance(full, list) and len(unset) == len(full):
        return [_with_kinds(u, f) for u, f in zip(unset, full)]
    return unset


def run(recipe: "str | Path | Recipe", out: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """``synth run RECIPE --out OUT``: write ``out/dataset``, ``report.json``, the card and the HTML
    report; return the report. A run that writes no training row returns normally (see
    ``report["output"]["rows"]``), where the command exits 2."""
    from synth.pipeline.run import run_recipe

    return run_recipe(load_recipe(recipe, overrides), out)


def plan(recipe: "str | Path | Recipe", overrides: Mapping[str, Any] | None = None) -> dict:
    """``synth run RECIPE --dry-run``: ``{"stages": [one row per LLM stage: requests, cached, to_send,
    token upper bounds, cost], "totals": ..., "budget": ...}``. Sends nothing and writes nothing."""
    from synth.pipeline.run import plan_recipe

    return plan_recipe(load_recipe(recipe, overrides))


def fn_probe(
    recipe: "str | Path | Recipe",
    out: str | Path | None = None,
    *,
    hide_fraction: float = 0.5,
    probe_seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """``synth fn-probe``: the false-negative probe's result (written to ``out/fn_probe.json`` when
    ``out`` is given)."""
    from synth.core.errors import UserError
    from synth.evaluate.fn_probe import run_fn_probe

    resolved = load_recipe(recipe, overrides)
    if resolved.mine is None:
        raise UserError(f"{resolved.name}: mine: the probe needs a mine section")
    return run_fn_probe(resolved, out, hide_fraction, probe_seed)


def relabel(
    input: str | Path,
    judges: str | Path,
    out: str | Path,
    *,
    policy: str = "drop_false_negatives",
    cap: int | None = None,
    llm: Any = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> dict:
    """``synth relabel``: judge every negative of ``input`` with the cascade ``judges``, apply ``policy``,
    write ``out``; return the report. ``llm``: a backend config (``synth.llm.config``) or its dict, e.g.
    ``{"kind": "local"}`` (default: the embedded local model)."""
    from synth.pipeline.relabel import relabel as run_relabel

    if isinstance(llm, Mapping):
        from pydantic import TypeAdapter

        from synth.llm.config import BackendConfig

        llm = TypeAdapter(BackendConfig).validate_python(dict(llm))
    report = run_relabel(input, judges, out, policy=policy, cap=cap, llm=llm, cache_dir=cache_dir, seed=seed)
    return report.model_dump(by_alias=True, exclude_unset=True)  # the API's report stays a plain dict
