"""The ``synth`` command. Parses arguments and maps user errors to exit code 2 with one line on
stderr; holds no pipeline logic."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from synth.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Training data for dense retrievers.")


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=None)],
    )
    for noisy in ("sentence_transformers", "httpx", "datasets", "faiss", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def validate(recipe: Path = typer.Argument(..., help="recipe YAML"),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override")) -> None:
    """Check a recipe and print it resolved, every default filled in."""
    from synth.recipe import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    import yaml

    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False), nl=False)


@app.command()
def run(recipe: Path = typer.Argument(..., help="recipe YAML"),
        out: Optional[Path] = typer.Option(None, "--out", help="output folder (dataset/ and report.json)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the planned LLM requests, a token upper "
                                     "bound and the cost; send nothing, write nothing"),
        verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run a recipe end to end."""
    from synth.recipe import load_recipe
    from synth.run import plan_recipe, run_recipe

    _setup_logging(verbose)
    resolved = load_recipe(recipe, set_ or [])
    if dry_run:
        _print_plan(plan_recipe(resolved))
        return
    if out is None:
        raise UserError("run: --out is required (or use --dry-run)")
    report = run_recipe(resolved, out)
    stages = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in report["stages"].items())
    typer.echo(f"wrote {report['output']['rows']} rows to {out}/dataset ({stages})")


def _print_plan(plan: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="planned LLM requests (dry run: nothing sent)")
    cols = [("stage", "stage"), ("model", "model"), ("requests", "requests"), ("cached", "cached"),
            ("to_send", "to send"), ("tokens_in_upper", "tokens in ≤"), ("tokens_out_upper", "tokens out ≤"),
            ("tokens_in_estimate", "tokens in ~"), ("cost_usd_upper", "cost ≤ USD")]
    for _, title in cols:
        table.add_column(title, justify="left" if title in ("stage", "model") else "right")
    for row in plan["stages"] + [{"stage": "total", "model": "", **plan["totals"]}]:
        table.add_row(*["no price" if k == "cost_usd_upper" and row.get(k) is None and row.get("to_send")
                        else str(row.get(k, "") if row.get(k) is not None else "") for k, _ in cols])
    Console(width=max(160, Console().width)).print(table)
    if plan.get("budget"):
        typer.echo(f"budget: {plan['budget']}")


@app.command("fn-probe")
def fn_probe(recipe: Path = typer.Argument(..., help="recipe YAML (a BEIR source with multi-positive queries)"),
             out: Path = typer.Option(..., "--out", help="folder for fn_probe.json"),
             hide_fraction: float = typer.Option(0.5, "--hide-fraction", min=0.01, max=0.99),
             probe_seed: int = typer.Option(0, "--probe-seed"),
             set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override"),
             verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """False-negative probe: hide a seeded share of each query's positives, mine, count how many
    mined negatives are hidden positives, beside how hard the negatives are."""
    from synth.evaluate.fn_probe import run_fn_probe
    from synth.recipe import load_recipe

    _setup_logging(verbose)
    resolved = load_recipe(recipe, set_ or [])
    if resolved.mine is None:
        raise UserError(f"{recipe}: mine: the probe needs a mine section")
    r = run_fn_probe(resolved, out, hide_fraction, probe_seed)
    typer.echo(f"FN rate {r['fn_rate']:.3f}  mean rank {r['mean_rank']:.1f}  median rank {r['median_rank']:.1f}  "
               f"queries short of {resolved.mine.n_negatives}: {r['queries_short']} / {r['queries']}")


@app.command()
def schema() -> None:
    """Print the recipe JSON schema (for editor completion)."""
    from synth.recipe import recipe_schema

    typer.echo(json.dumps(recipe_schema(), indent=2))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(standalone_mode=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors carry their own exit code
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise
