"""The body sections of the dataset card (``synth.publish.card``), each from a typed, scrubbed ``RunReport``:
loading and training snippets, provenance, scores, judging, leakage, models and prompts, recipe.

Each function returns the card's lines for one section (an empty list when the run has no such section).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from synth.formats.st import LAYOUTS
from synth.report.judging import JudgeStage, Judging
from synth.report.run import STAT_KEYS, RunReport, Selection
from synth.publish.escape import md_code, md_text, one_line, py_str, safe_yaml, slug

BUNDLED_EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "" if x is None else str(x)


def table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:  # a user string is text, never markup: HTML-escaped, one line, pipes kept in the cell
        return html.escape(one_line(_fmt(v)), quote=False).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def code_block(language: str, text: str) -> list[str]:
    return [f"```{language}", text.rstrip(), "```", ""]


def train_columns(report: RunReport) -> list[str]:
    return list(report.output.train_columns)


def loading_snippet(report: RunReport, out_dir: Path, repo_id: str | None) -> tuple[str, str]:
    """(local, hub) Python snippets. The local one runs as written from the folder holding the card."""
    is_dict = (out_dir / "dataset" / "dataset_dict.json").is_file()
    pick = '["triplets"]' if is_dict else ""
    # The layout configs hold the trainable columns only (provenance is in *_provenance): they train as loaded.
    local = (
        "from datasets import load_from_disk\n\n"
        "# run from the folder holding this card (the output of `synth run`)\n"
        f'train_dataset = load_from_disk("dataset"){pick}  # {", ".join(train_columns(report))}\n'
    )
    hub = (
        "from datasets import load_dataset\n\n"
        f'train_dataset = load_dataset("{repo_name(report, repo_id)}", "triplets", split="train")\n'
    )
    return local, hub


def repo_name(report: RunReport, repo_id: str | None) -> str:
    return repo_id or f"YOUR_NAMESPACE/{slug(report.recipe.get('name'))}"


def provenance_section(report: RunReport, configs: dict[str, int], repo_id: str | None) -> list[str]:
    """How to join a layout config with its ``*_provenance`` config (row i <-> row_id i)."""
    from synth.formats.st import PROVENANCE_SUFFIX, ROW_ID

    pairs = [
        (c[: -len(PROVENANCE_SUFFIX)], c)
        for c in configs
        if c.endswith(PROVENANCE_SUFFIX) and c[: -len(PROVENANCE_SUFFIX)] in configs
    ]
    if not pairs:
        return []
    repo = repo_name(report, repo_id)
    return [
        "## Provenance",
        "",
        "Each layout config holds only the columns the trainer takes; where every row came from (query and "
        "document ids, mining scores, sampler, seed, query origin, judge verdicts) is in its parallel config: "
        + ", ".join(f"`{c}` for `{t}`" for t, c in pairs)
        + f". They align by row order: row *i* of `{pairs[0][1]}` "
        f"(its `{ROW_ID}` is *i*) describes row *i* of `{pairs[0][0]}`. `{ROW_ID}` is not in the layout config "
        "because the trainer would take it as an input. To join them:",
        "",
        *code_block(
            "python",
            "from datasets import concatenate_datasets, load_dataset\n\n"
            f'rows = load_dataset("{repo}", "{pairs[0][0]}", split="train")\n'
            f'provenance = load_dataset("{repo}", "{pairs[0][1]}", split="train")\n'
            "joined = concatenate_datasets([rows, provenance], axis=1)  # row i with its provenance",
        ),
    ]


def training_snippet(report: RunReport) -> str:
    model = str((report.recipe.get("embed") or {}).get("model") or BUNDLED_EMBEDDER_HUB_ID)
    if model.startswith("bundled:"):
        model = BUNDLED_EMBEDDER_HUB_ID
    layout = LAYOUTS.get(report.output.format) or LAYOUTS["n-tuple"]
    loss = layout.loss
    labeled = loss != "MultipleNegativesRankingLoss"
    why = (
        f"# ({', '.join(layout.columns(1))}) rows: a pair loss"
        if labeled
        else "# (anchor, positive, negatives...) rows: in-batch + hard negatives"
    )
    return (
        "from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,\n"
        "                                   SentenceTransformerTrainingArguments)\n"
        f"from sentence_transformers.losses import {loss}\n"
        "from sentence_transformers.training_args import BatchSamplers\n\n"
        f"model = SentenceTransformer({py_str(model)})\n"
        f"{why}\n"
        f"loss = {loss}(model)\n"
        'args = SentenceTransformerTrainingArguments(output_dir="trained", num_train_epochs=1,\n'
        "    per_device_train_batch_size=32, learning_rate=2e-5,\n"
        "    batch_sampler=BatchSamplers.NO_DUPLICATES)  # no repeated texts within a batch\n"
        "trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_dataset, loss=loss)\n"
        "trainer.train()\n"
    )


def loading_section(report: RunReport, out_dir: Path, repo_id: str | None) -> list[str]:
    local, hub = loading_snippet(report, out_dir, repo_id)
    return [
        "## How to load and train",
        "",
        "From this folder:",
        "",
        *code_block("python", local),
        "From the Hub:",
        "",
        *code_block("python", hub),
        "Each layout config holds only the columns sentence-transformers takes (it tokenises every column "
        "that is not a label), so it trains as loaded:",
        "",
        *code_block("python", training_snippet(report)),
    ]


def scores_section(report: RunReport) -> list[str]:
    if report.scores is None:
        return []
    scores = report.scores
    described = [(k, getattr(scores, k)) for k in ("negative", "positive", "positive_minus_negative")]
    return [
        "## Scores",
        "",
        f"Score space: {md_code(scores.space)} (the embedder's similarity).",
        "",
        table(["scores", *STAT_KEYS], [[k, *(getattr(v, s) for s in STAT_KEYS)] for k, v in described]),
        "",
    ]


STAGE_COLUMNS = ["stage", "kind", "candidates", "reused", "judged", "negative", "false_negative", "uncertain"]
STAGE_COLUMNS += ["failed", "seconds"]


def model_line(stage: JudgeStage) -> str:
    """One line on a learned judge (``fn_risk``): what it learned from, the replay's estimate against plain
    top-n and the hardness limit, or why it fell back."""
    r = stage.model_report
    summary = r.summary or f"could not learn: {r.why}"
    return f"Stage {md_code(stage.stage)} ({md_text(stage.kind)}): {md_text(summary)}.\n"


def _judging_lines(judging: Judging) -> list[str]:
    final = ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in judging.final.model_dump().items())
    out = ["## Judging", "", f"Final verdicts: {final}.", ""]
    if judging.stages:
        out += [table(STAGE_COLUMNS, [[getattr(s, c) for c in STAGE_COLUMNS] for s in judging.stages]), ""]
    out += [model_line(s) for s in judging.stages if s.model_report is not None]
    policy = ", ".join(f"{md_text(k)} {md_text(_fmt(v))}" for k, v in judging.policy.items())
    return out + [f"Policy: {policy}.", ""]


def _selection_lines(selection: Selection) -> list[str]:
    return [
        f"Selection: {selection.pairs_full} of {selection.pairs} pairs got all their negatives "
        f"({selection.pairs_backfilled} with backfill from further down the ranking); short: "
        + ", ".join(f"{k} {v}" for k, v in selection.short_reasons.items())
        + ".",
        "",
    ]


def judging_section(report: RunReport) -> list[str]:
    """``## Judging``: final verdicts, one row per cascade stage, the risk models, the policy; then selection."""
    out = _judging_lines(report.judging) if report.judging is not None else []
    return out + (_selection_lines(report.selection) if report.selection is not None else [])


def leakage_section(report: RunReport) -> list[str]:
    flat = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in report.leakage.model_dump().items()]
    return ["## Leakage", "", table(["", "value"], flat), ""]


def recipe_section(report: RunReport) -> list[str]:
    # without `engine`: where the stages ran (one process or a Ray cluster) does not change the data
    shown = {key: value for key, value in report.recipe.items() if key != "engine"}
    return [
        "## Recipe",
        "",
        "The resolved recipe (every default filled in); `synth run` on it reproduces the data.",
        "",
        *code_block("yaml", safe_yaml(shown)),
    ]


def environment_line(report: RunReport) -> list[str]:
    env = report.environment.model_dump()
    return ["Made with " + ", ".join(f"{k} {md_text(v)}" for k, v in env.items() if v) + ".", ""]
