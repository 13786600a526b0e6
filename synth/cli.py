"""The ``synth`` command. Parses arguments and maps user errors to exit code 2 with one line on
stderr; holds no pipeline logic."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

import typer

from synth.core.errors import INTERRUPTED, Interrupted, UserError, os_error_line
from synth.core.strict import SEED_MAX

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Training data for dense retrievers.")


def _setup_logging(verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # stderr: stdout carries only a command's result (its summary line, a table, JSON) for pipes and scripts
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, show_time=False, console=Console(stderr=True))],
        force=True,
    )
    # torch logs cache statistics at exit (after the ``interrupted`` line): quiet below warnings
    for noisy in ("sentence_transformers", "httpx", "datasets", "faiss", "transformers", "bm25s", "torch"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _finite(low: float, high: float, *, above: bool = False):
    """An option callback: refuse nan, inf and numbers outside ``[low, high]`` (``(low, high]`` when
    ``above``) with a usage error naming the option; typer's own ``min=`` lets nan and inf through."""

    def check(value: Optional[float]) -> Optional[float]:
        inside = value is None or (math.isfinite(value) and (value > low if above else value >= low) and value <= high)
        if not inside:
            low_side = f"> {low:g}" if above else f">= {low:g}"
            raise typer.BadParameter(f"expected a finite number {low_side} and <= {high:g}, got {value}")
        return value

    return check


# Ranges of the training options: wider than any sensible value, narrow enough that a typo fails in
# one line instead of running for days or failing deep inside the trainer.
MAX_EPOCHS = 1000
MAX_STEPS = 10_000_000
MAX_BATCH = 65_536
MAX_SEQ_LENGTH = 8192
MAX_PAIRS = 100_000_000


@app.command()
def validate(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override"),
) -> None:
    """Check a recipe and print it resolved, every default filled in."""
    from synth.recipe import load_recipe

    resolved = load_recipe(_recipe_file(recipe), set_ or [])
    import yaml

    typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False), nl=False)


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="recipe YAML"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (dataset/ and report.json)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override"),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="print the planned LLM requests, a token upper bound and the cost; send nothing, write nothing",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a recipe end to end."""
    from synth.recipe import load_recipe
    from synth.pipeline.run import plan_recipe, run_recipe

    _setup_logging(verbose)
    resolved = load_recipe(_recipe_file(recipe), set_ or [])
    if dry_run:
        _print_plan(plan_recipe(resolved))
        return
    if out is None:
        raise UserError("run: --out is required (or use --dry-run)")
    from synth.report.run import RunReport

    report = RunReport.model_validate(run_recipe(resolved, out))
    if not report.output.rows:  # the folder is written (inspect its report, notices too): no success
        from synth.pipeline.run import zero_rows_reason

        raise UserError(
            f"run: wrote 0 training rows to {out}/dataset ({zero_rows_reason(report)}); see {out}/report.json"
        )
    stages = ", ".join(f"{k} {v.seconds:.1f}s" for k, v in report.stages.items())
    typer.echo(f"wrote {report.output.rows} rows to {out}/dataset ({stages})")
    _echo_notices(report.notices)


def _recipe_file(recipe: Path) -> Path:
    if recipe.is_dir():
        raise UserError(f"{recipe}: is a folder; expected a recipe YAML file")
    return recipe


def _print_plan(plan: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="planned LLM requests (dry run: nothing sent)")
    cols = [
        ("stage", "stage"),
        ("model", "model"),
        ("requests", "requests"),
        ("cached", "cached"),
        ("to_send", "to send"),
        ("tokens_in_upper", "tokens in ≤"),
        ("tokens_out_upper", "tokens out ≤"),
        ("tokens_in_estimate", "tokens in ~"),
        ("cost_usd_upper", "cost ≤ USD"),
    ]
    for _, title in cols:
        table.add_column(title, justify="left" if title in ("stage", "model") else "right")
    for row in plan["stages"] + [{"stage": "total", "model": "", **plan["totals"]}]:
        table.add_row(
            *[
                "no price"
                if k == "cost_usd_upper" and row.get(k) is None and row.get("to_send")
                else str(row.get(k, "") if row.get(k) is not None else "")
                for k, _ in cols
            ]
        )
    Console(width=max(160, Console().width)).print(table)
    if plan.get("budget"):
        typer.echo(f"budget: {plan['budget']}")


@app.command("fn-probe")
def fn_probe(
    recipe: Path = typer.Argument(..., help="recipe YAML (a BEIR source with multi-positive queries)"),
    out: Path = typer.Option(..., "--out", help="folder for fn_probe.json"),
    hide_fraction: float = typer.Option(0.5, "--hide-fraction", min=0.01, max=0.99),
    probe_seed: int = typer.Option(0, "--probe-seed", min=0, max=SEED_MAX),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value override"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """False-negative probe: hide a seeded share of each query's positives, mine, count how many
    mined negatives are hidden positives, beside how hard the negatives are."""
    from synth.evaluate.fn_probe import run_fn_probe
    from synth.publish.card import probe_summary
    from synth.recipe import load_recipe

    _setup_logging(verbose)
    resolved = load_recipe(_recipe_file(recipe), set_ or [])
    if resolved.mine is None:
        raise UserError(f"{recipe}: mine: the probe needs a mine section")
    from synth.report.files import FnProbeResult

    r = FnProbeResult.model_validate(run_fn_probe(resolved, out, hide_fraction, probe_seed))
    typer.echo(probe_summary(r))
    for st in (r.judges or {}).get("stages") or []:  # judge_quality's figures (synth.evaluate.fn_probe)
        model = st.get("model_estimate") or {}
        typer.echo(
            f"judge {st['stage']} ({st['kind']}): AUC {_fig(st['auc'])} on {st['hidden_positives']} hidden positives "
            f"among {st['candidates']} candidates; false-negative verdicts: precision {_fig(st['precision'])}, "
            f"recall {_fig(st['recall'])} (base rate {_fig(st['base_rate'])})"
            + (f"; {model['summary']}" if model.get("summary") else "")
        )
    _echo_notices(r.notices)


def _fig(x) -> str:  # a probe that mined nothing has no rate and no rank
    return "-" if x is None else f"{x:.3f}" if x < 1 else f"{x:.1f}"


def _echo_notices(notices: list[str]) -> None:
    """What a run or a probe must not keep quiet (a judge that fell back, pairs left short): on stderr."""
    for line in notices:
        typer.echo(f"warning: {line}", err=True)


@app.command()
def relabel(
    input: Optional[str] = typer.Option(
        None, "--input", help="saved HF dataset folder, Hub id (local cache only) or Tevatron .jsonl"
    ),
    judges: Optional[Path] = typer.Option(None, "--judges", help="cascade file (judges/NAME.yaml)"),
    out: Path = typer.Option(..., "--out", help="output folder"),
    policy: str = typer.Option(
        "drop_false_negatives", "--policy", help="keep | drop_pair | drop_false_negatives | relabel_as_positive"
    ),
    cap: Optional[int] = typer.Option(
        None, "--cap", min=0, max=MAX_PAIRS, help="drop a query with more than N flagged negatives"
    ),
    llm: Optional[str] = typer.Option(
        None,
        "--llm",
        help="LLM backend: a YAML file or inline YAML/JSON, e.g. '{kind: local}' (default: the embedded local model)",
    ),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    reapply: Optional[Path] = typer.Option(
        None, "--reapply", help="a previous relabel output: apply --policy to its verdicts (no model, no LLM calls)"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Judge the negatives of an existing training set with a cascade and apply a policy."""
    from synth.pipeline import relabel as rl

    _setup_logging(verbose)
    if reapply is not None:
        if input is not None or judges is not None or llm is not None:
            raise UserError("relabel --reapply: takes only --policy, --cap and --out")
        report = rl.reapply(reapply, policy, cap, out)
    else:
        if input is None or judges is None:
            raise UserError("relabel: --input and --judges are required (or --reapply DIR)")
        report = rl.relabel(input, judges, out, policy=policy, cap=cap, llm=_parse_llm(llm), seed=seed)
    p, fin = report.policy, report.cascade.final  # policy: apply_policy's counts, a mapping
    if not report.output["rows"]:  # per-format counts (synth.formats): a mapping, rows among them
        from synth.pipeline.run import judge_failure_reasons

        failed = "".join(f", {line}" for line in judge_failure_reasons(report.cascade.stages))
        raise UserError(
            f"relabel: wrote 0 rows to {out} (policy {p['policy']}: negatives {p['negatives_in']} -> "
            f"{p['negatives_out']}, false_negative verdicts {fin.false_negative}{failed}); "
            f"see {out}/report.json"
        )
    typer.echo(
        f"{report.output['rows']} rows to {out} (policy {p['policy']}: negatives {p['negatives_in']} -> "
        f"{p['negatives_out']}; verdicts negative {fin.negative}, false_negative {fin.false_negative}, "
        f"uncertain {fin.uncertain}; LLM requests sent {report.llm.requests_sent})"
    )
    _echo_notices([n for st in report.cascade.stages if st.model_report for n in st.model_report.notices])


@app.command("train-judge")
def train_judge(
    source: Path = typer.Option(..., "--source", help="BEIR folder whose labelled positives train the judge"),
    out: Path = typer.Option(..., "--out", help="folder for the CrossEncoder (use it as a judge's model:)"),
    split: str = typer.Option("train", "--split", help="qrels split (qrels/<split>.tsv)"),
    epochs: int = typer.Option(1, "--epochs", min=1, max=MAX_EPOCHS),
    max_pairs: Optional[int] = typer.Option(None, "--max-pairs", min=2, max=MAX_PAIRS, help="cap on training examples"),
    negatives_per_positive: int = typer.Option(
        3, "--negatives-per-positive", min=1, max=1000, help="BM25 + random negatives beside each positive"
    ),
    max_length: int = typer.Option(256, "--max-length", min=16, max=MAX_SEQ_LENGTH),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune a cross-encoder judge from the bundled MiniLM on a dataset's labelled positives (offline, CPU)."""
    from synth.judge.train_cli import train_judge_command

    _setup_logging(verbose)
    stats = train_judge_command(
        source,
        out,
        epochs=epochs,
        max_pairs=max_pairs,
        seed=seed,
        split=split,
        negatives_per_positive=negatives_per_positive,
        max_length=max_length,
    )
    typer.echo(json.dumps({"out": str(out), "counts": stats.get("counts"), "seconds": stats.get("seconds")}))


def _parse_llm(value: Optional[str]):
    if value is None:
        return None
    from synth.llm import resolve_model_path
    from synth.llm.config import BackendConfig
    from synth.core.yamlio import load_file, load_text, validate

    path = Path(value).expanduser()
    try:
        is_file = path.is_file()
    except OSError:
        is_file = False
    raw = load_file(path, "--llm") if is_file else load_text(value, "--llm")  # UserError naming file:line
    if not isinstance(raw, dict):
        raise UserError(f"--llm: expected a mapping like '{{kind: local}}' or a YAML file, got {value[:80]!r}")
    cfg = validate(BackendConfig, raw, "--llm")
    resolve_model_path(cfg, path.resolve().parent if is_file else Path.cwd())
    return cfg


@app.command()
def push(
    run_dir: Path = typer.Argument(..., help="a run folder (synth run --out DIR)"),
    repo: str = typer.Option(..., "--repo", help="Hub dataset repo, owner/name"),
    private: bool = typer.Option(
        False, "--private", help="create the repo private (an existing repo keeps its visibility)"
    ),
    config: Optional[List[str]] = typer.Option(
        None, "--config", help="push only this config (repeatable); default: every config of the run"
    ),
) -> None:
    """Push a run's dataset configs and card to the Hugging Face Hub; DIR/push.json records a complete push."""
    # main() makes the process offline so that runs never download; a push is an explicit request for the
    # network. A user's own HF_HUB_OFFLINE=1 is respected (push_run then says so in one line).
    if _OFFLINE_SET_BY_SYNTH:
        os.environ["HF_HUB_OFFLINE"] = "0"
    from synth.publish.hub import push_run

    result = push_run(run_dir, repo, private=private, configs=config or None)
    for pushed in result["configs"]:
        typer.echo(f"pushed {pushed['name']} ({pushed['rows']} rows): {pushed['commit_url']}")
    typer.echo(f"card: {result['card']['commit_url']}\n{result['url']} (recorded in {run_dir}/push.json)")


@app.command("eval")
def eval_(
    data: Path = typer.Argument(..., help="a run folder (DIR/dataset inside) or a saved dataset"),
    beir: Path = typer.Option(..., "--beir", help="BEIR folder to evaluate on"),
    split: str = typer.Option("test", "--split", help="qrels/<split>.tsv of --beir"),
    seed: int = typer.Option(0, "--seed", min=0, max=SEED_MAX),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, max=MAX_STEPS, help="overrides --epochs"),
    epochs: float = typer.Option(1.0, "--epochs", callback=_finite(0.001, MAX_EPOCHS)),
    batch_size: int = typer.Option(32, "--batch-size", min=1, max=MAX_BATCH),
    lr: float = typer.Option(2e-5, "--lr", callback=_finite(0, 1, above=True)),
    max_seq_length: int = typer.Option(256, "--max-seq-length", min=8, max=MAX_SEQ_LENGTH),
    out: Optional[Path] = typer.Option(None, "--out", help="write the result JSON here"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Fine-tune the bundled MiniLM on a dataset (MNRL, CPU) and report nDCG@10, MRR@10, Recall@100."""
    from synth.evaluate.train_eval import train_and_evaluate
    from synth.core.files import atomic_write_json
    from synth.core.outdir import check_result_file

    _setup_logging(verbose)
    if out is not None:
        check_result_file(out)  # before the training, not after
    r = train_and_evaluate(
        data,
        beir,
        split=split,
        seed=seed,
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_seq_length=max_seq_length,
    )
    if out is not None:
        atomic_write_json(out, {**r, "synth": {"command": "eval"}})  # the key marks the file as synth's
    m, t = r["metrics"], r["training"]
    typer.echo(
        f"nDCG@10 {m['ndcg@10']:.4f}  MRR@10 {m['mrr@10']:.4f}  R@100 {m['recall@100']:.4f}  "
        f"({t['rows']} rows, {t['steps']} steps, seed {t['seed']}, train {r['seconds']['train']:.1f}s, "
        f"eval {r['seconds']['eval']:.1f}s)"
    )


@app.command()
def compare(
    entries: List[str] = typer.Argument(..., help="recipes, run folders, or 'base' (the untrained model)"),
    beir: Path = typer.Option(..., "--beir", help="BEIR folder to evaluate on"),
    out: Path = typer.Option(..., "--out", help="folder for compare.json, compare.md, cells/ and runs/"),
    split: str = typer.Option("test", "--split", help="qrels/<split>.tsv of --beir"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, max=MAX_STEPS, help="overrides --epochs"),
    epochs: float = typer.Option(1.0, "--epochs", callback=_finite(0.001, MAX_EPOCHS)),
    batch_size: int = typer.Option(32, "--batch-size", min=1, max=MAX_BATCH),
    max_seq_length: int = typer.Option(256, "--max-seq-length", min=8, max=MAX_SEQ_LENGTH),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="dotted.key=value for every recipe entry"),
    probe: bool = typer.Option(True, "--probe/--no-probe", help="false-negative probe of each recipe"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train on each entry's data with each seed; write a mean ± std table (resumable)."""
    from synth.evaluate.compare import compare as run_compare
    from synth.evaluate.compare import parse_seeds

    _setup_logging(verbose)
    run_compare(
        entries,
        beir,
        parse_seeds(seeds),
        out,
        split=split,
        overrides=set_ or [],
        max_steps=max_steps,
        epochs=epochs,
        batch_size=batch_size,
        max_seq_length=max_seq_length,
        probe=probe,
    )
    typer.echo((out / "compare.md").read_text(encoding="utf-8"), nl=False)


@app.command()
def schema(
    report: bool = typer.Option(False, "--report", help="print the schema of a run's report.json instead"),
) -> None:
    """Print the recipe JSON schema (for editor completion), or with --report the run report's."""
    if report:
        from synth.report.run import report_schema

        typer.echo(json.dumps(report_schema(), indent=2))
        return
    from synth.recipe import recipe_schema

    typer.echo(json.dumps(recipe_schema(), indent=2))


@app.command()
def init(
    folder: Path = typer.Argument(..., help="project folder to create or fill"),
    force: bool = typer.Option(False, "--force", help="overwrite files already there"),
) -> None:
    """Write the example recipes, judge cascades, prompts and example data into FOLDER (for a wheel install)."""
    from synth.assets.init import init_folder, summary

    typer.echo(summary(folder, init_folder(folder, force)))


_OFFLINE_SET_BY_SYNTH = False
_SIGNALLED: list[int] = []  # the signals received, in order


def _on_signal(signum, frame) -> None:
    """First SIGINT/SIGTERM/SIGHUP: raise in the main thread, so every ``finally`` and temp-folder cleanup runs.
    A second one while that cleanup hangs (a native call that never returns): clean up and leave now."""
    _SIGNALLED.append(signum)
    if len(_SIGNALLED) > 1:
        _leave_interrupted()  # a second signal while the cleanup hangs: leave now
    raise KeyboardInterrupt() if signum == signal.SIGINT else Interrupted()


def _leave_interrupted() -> None:
    """Remove the temp folders, print the one line and leave with 128 + the signal number, at once. Every
    ``finally`` has run by now; a normal interpreter exit would wait on worker threads (thread pools, the
    embedded LLM's client) and library exit hooks, and after Ctrl-C it sometimes ended as killed by SIGINT
    (status -2, about one run in eight mid-stage) instead of exiting 130."""
    from synth.core import outdir

    outdir.discard_all()
    signum = _SIGNALLED[-1] if _SIGNALLED else signal.SIGINT
    code = 128 + int(signum)  # 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP
    print(INTERRUPTED, file=sys.stderr, flush=True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said on it
            pass
    os._exit(code)


def _discard_unfinished() -> None:
    """Remove the temp output folders a failed command still holds. Each writer removes its own on the
    way out; this catches a failure between creating one and handing it over (a full disk while writing
    its marker, memory running out), so no empty or partial folder is left beside ``--out``."""
    from synth.core import outdir

    outdir.discard_all()


def _usage_error_line(e: BaseException) -> str:
    """``error: CMD: message (see synth CMD --help)`` for a click usage error. Duck-typed: typer >= 0.29
    carries its own copy of click (``typer._click``) whose classes are not ``click``'s."""
    names, ctx = [], getattr(e, "ctx", None)
    while ctx is not None and ctx.parent is not None:
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    cmd = " ".join(n for n in names if n)
    message = " ".join(e.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    return f"error: {cmd + ': ' if cmd else ''}{message} (see synth {cmd + ' ' if cmd else ''}--help)"


def main() -> None:
    global _OFFLINE_SET_BY_SYNTH
    if "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded at run time
        _OFFLINE_SET_BY_SYNTH = True
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if os.environ.get("SYNTH_PROGRESS", "1") == "0" or not sys.stderr.isatty():
        # synth's own bars go quiet then; so do the libraries' tqdm bars, which would fill CI logs
        for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE"):
            os.environ.setdefault(name, "1")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a closed terminal (SIGHUP) is a stop too
        signal.signal(signum, _on_signal)
    try:
        code = app(standalone_mode=False)
    except UserError as e:
        _discard_unfinished()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        _leave_interrupted()
    except Exception as e:  # noqa: BLE001 - every other failure is classified below or re-raised
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare `synth`: the help (rich prints it itself)
            if e.format_message().strip():
                print(e.format_message(), file=sys.stderr)
            sys.exit(2)
        if type(e).__name__ == "Abort":
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            print(_usage_error_line(e), file=sys.stderr)
            sys.exit(e.exit_code)
        _discard_unfinished()
        fs = os_error_line(e)  # a full disk, a file-size limit, a path that cannot be used, out of memory
        if fs is None:
            raise
        print(f"error: {fs[0]}", file=sys.stderr)
        sys.exit(fs[1])
    # typer turns a KeyboardInterrupt inside a command into Exit(130) and, outside standalone mode,
    # returns that code instead of raising: an interrupted run would otherwise exit 0 without a word.
    if isinstance(code, int) and code:
        if code == 130 or _SIGNALLED:
            _leave_interrupted()
        sys.exit(code)
