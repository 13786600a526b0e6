"""The dataset card: ``DIR/README.md`` with Hugging Face front matter, written from the run's report.

Every report key is optional (a run without LLM stages has no ``llm`` usage, a run without a judge has
no ``judging``), so each section renders only what is there. The report passes through
``scrub_secrets`` (``synth.publish.secrets``) first, and the rendered card through ``scrub_text``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from synth.core.files import atomic_write_text
from synth.formats.st import LAYOUTS
from synth.publish.escape import md_code, md_text, one_line, py_str, safe_yaml, slug
from synth.publish.secrets import scrub_secrets, scrub_text

CARD = "README.md"
BUNDLED_EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# Hugging Face `license:` ids for the spellings recipes and model cards use.
_LICENSE_ALIASES = {
    "apache 2.0": "apache-2.0",
    "apache-2": "apache-2.0",
    "apache license 2.0": "apache-2.0",
    "mit license": "mit",
    "cc by 4.0": "cc-by-4.0",
    "cc-by 4.0": "cc-by-4.0",
    "cc by-sa 4.0": "cc-by-sa-4.0",
    "cc by-nc 4.0": "cc-by-nc-4.0",
    "cc by-nc-sa 4.0": "cc-by-nc-sa-4.0",
    "cc0": "cc0-1.0",
    "cc0 1.0": "cc0-1.0",
    "": "unknown",
    "none": "unknown",
    "null": "unknown",
}
# size_categories buckets of the Hub, by upper bound.
_SIZE_BUCKETS = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]


# ---------------------------------------------------------------- licences


def normalize_license(value: str | None) -> str:
    text = (value or "").strip()
    key = text.lower().replace("_", " ")
    if key in _LICENSE_ALIASES:
        return _LICENSE_ALIASES[key]
    if key.startswith(("cc ", "cc-")):  # "CC BY-SA 3.0" -> cc-by-sa-3.0
        key = re.sub(r"\s+", "-", key)
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", key):
        return key
    return text  # free text ("research only"): kept as written, never agrees with an id


def combine_licenses(parts: dict[str, str]) -> tuple[str, str | None]:
    """One ``license:`` for the card from each part's licence (role -> id or free text).

    All parts agree -> ``(that id, None)``. Otherwise ``("other", details)`` where details names every
    part ("corpus: cc-by-4.0; personas: apache-2.0"). Unknown parts are named too: a dataset is only as
    free as its least free part, so an unknown part makes the whole unknown-but-listed."""
    normalized = {role: normalize_license(v) for role, v in parts.items() if v is not None}
    distinct = set(normalized.values())
    if not normalized:
        return "unknown", None
    if len(distinct) == 1:
        only = next(iter(distinct))
        if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", only):
            return only, None
    details = "; ".join(f"{role}: {lic}" for role, lic in normalized.items())
    return "other", details


def license_parts(report: dict) -> dict[str, str]:
    """``report["licenses"]`` when the run wrote it; else what the recipe and report say."""
    if isinstance(report.get("licenses"), dict) and report["licenses"]:
        return {str(k): str(v) for k, v in report["licenses"].items() if v is not None}
    recipe = report.get("recipe") or {}
    parts: dict[str, str] = {}
    source = recipe.get("source") or {}
    parts["corpus"] = str(source.get("license") or "unknown")
    personas = report.get("personas")
    if isinstance(personas, dict) and personas.get("license"):
        parts["personas"] = str(personas["license"])
    model = (recipe.get("embed") or {}).get("model", "")
    if str(model).startswith("bundled:"):
        parts["embedder"] = "apache-2.0"  # all-MiniLM-L6-v2
    llm = recipe.get("llm") or {}
    if llm.get("kind") == "local" and str(llm.get("model", "")).startswith("bundled:"):
        parts["llm"] = "apache-2.0"  # SmolLM2-135M-Instruct
    return parts


# ---------------------------------------------------------------- what the card says


def size_category(rows: int) -> str:
    for bound, name in _SIZE_BUCKETS:
        if rows < bound:
            return name
    return "n>1B"


def models_used(report: dict) -> list[dict]:
    """Embedder, LLM(s) and judges: ``{"role", "model", "detail"}`` rows."""
    recipe = report.get("recipe") or {}
    out = []
    embed = recipe.get("embed") or {}
    if embed.get("model"):
        detail = f"max_seq_length {embed.get('max_seq_length')}"
        for p in ("query_prompt", "passage_prompt"):
            if embed.get(p):
                detail += f", {p} {embed[p]!r}"
        out.append({"role": "embedder", "model": str(embed["model"]), "detail": detail})
    llm = recipe.get("llm") or {}
    if llm:
        detail = ", ".join(f"{k} {llm[k]}" for k in ("kind", "temperature", "top_p") if llm.get(k) is not None)
        out.append({"role": "llm", "model": str(llm.get("model", llm.get("kind", ""))), "detail": detail})
    used = (report.get("llm") or {}).get("stages") or {}
    for stage, entry in used.items():
        for model in (entry or {}).get("models") or {}:
            out.append(
                {
                    "role": f"llm ({stage})",
                    "model": str(model),
                    "detail": "as served (name, @ weights hash for local models)",
                }
            )
    judging = report.get("judging") or {}
    resolved = ((judging.get("cascade") or {}).get("resolved") or {}).get("stages") or []
    for stage in resolved:
        model = (
            stage.get("model")
            or (stage.get("llm") or {}).get("model")
            or ("run llm" if "llm" in str(stage.get("kind")) else "")
        )
        extra = f", prompt {stage['prompt']}" if stage.get("prompt") else ""
        out.append(
            {
                "role": f"judge {stage.get('name', '?')}",
                "model": str(model or stage.get("kind")),
                "detail": f"kind {stage.get('kind')}{extra}",
            }
        )
    return out


def prompt_hashes(report: dict) -> list[tuple[str, str]]:
    """Every (where, sha256) the report records for a prompt, in report order, without repeats."""
    found: list[tuple[str, str]] = []

    def walk(x, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                here = f"{path}.{k}" if path else str(k)
                if "sha256" in str(k) and "prompt" in here and isinstance(v, str) and v:
                    if all(v != h for _, h in found):
                        found.append((path or str(k), v))
                elif isinstance(v, dict) and "sha256" in str(k) and "prompt" in here:
                    for name, h in v.items():  # {prompt name: hash}
                        if isinstance(h, str) and all(h != f for _, f in found):
                            found.append((f"{here}.{name}", h))
                else:
                    walk(v, here)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")

    walk(report, "")
    return found


def prompt_hashes_on_disk(out_dir: Path) -> list[tuple[str, str]]:
    """(where, sha256) from the datasets the run saved: rows carry their prompt hash even when the
    report does not. Only the hash columns are read (through Arrow), so large configs stay cheap."""
    from datasets import DatasetDict, load_from_disk

    found: list[tuple[str, str]] = []
    for folder in ("dataset", "synthetic_queries", "synthetic_negatives", "verdicts"):
        if not (out_dir / folder).is_dir():
            continue
        try:
            loaded = load_from_disk(str(out_dir / folder))
        except (FileNotFoundError, ValueError):
            continue
        parts = loaded.items() if isinstance(loaded, DatasetDict) else [(folder, loaded)]
        for name, ds in parts:
            # Only plain string columns: list columns (one hash per negative) are summarised by the
            # configs that own those prompts (verdicts, synthetic_*), and Arrow cannot group by lists.
            strings = {c for c, f in ds.features.items() if getattr(f, "dtype", None) in ("string", "large_string")}
            for col in [c for c in ds.column_names if c.endswith("prompt_sha256") and c in strings]:
                keep = [c for c in (col, "prompt", "model", "query_model") if c in strings]
                rows = ds.select_columns(keep).with_format("arrow")[:].group_by(keep).aggregate([]).to_pylist()
                for row in rows:
                    label = " ".join(str(row[c]) for c in keep[1:] if row.get(c))
                    if row[col] and all(row[col] != h for _, h in found):
                        found.append((f"{name}.{col}" + (f" ({label})" if label else ""), row[col]))
    return found


def _model_line(stage: dict) -> str:
    """One line on a learned judge (``fn_risk``): what it learned from, the replay's estimate against plain
    top-n and the hardness limit, or why it fell back."""
    r = stage["model_report"]
    name, kind = md_code(stage.get("stage")), md_text(stage.get("kind"))
    summary = r.get("summary") or f"could not learn: {r.get('problem') or r.get('why')}"
    return f"Stage {name} ({kind}): {md_text(summary)}.\n"


def probe_summary(r: dict) -> str:
    """A false-negative probe in one line: FN against plain top-n's, hardness against the limit, shortfall
    (``synth fn-probe``'s output line; the card and report.html show the same)."""

    def fig(x) -> str:  # a probe that mined nothing has no rate and no rank
        return "-" if not isinstance(x, (int, float)) else f"{x:.3f}" if x < 1 else f"{x:.1f}"

    def times(x) -> str:
        return "-" if not isinstance(x, (int, float)) else f"{x:.2f}x" if x < 1 else f"{x:.1f}x"

    n = r.get("n", "n")
    return (
        f"FN {fig(r.get('fn_rate'))} = {times(r.get('fn_vs_topk'))} top-{n}'s {fig(r.get('topk_fn_rate'))}, "
        f"at mean rank {fig(r.get('mean_rank'))} = {times(r.get('rank_vs_oracle'))} the hardness limit "
        f"{fig(r.get('oracle_mean_rank'))} (median rank {fig(r.get('median_rank'))}); "
        f"queries short of {n}: {r.get('queries_short', '-')} / {r.get('probed_queries', '-')}"
    )


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "" if x is None else str(x)


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:  # a user string is text, never markup: HTML-escaped, one line, pipes kept in the cell
        return html.escape(one_line(_fmt(v)), quote=False).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def train_columns(report: dict) -> list[str]:
    output = report.get("output") or {}
    return list(output.get("train_columns") or ["anchor", "positive"])


def loading_snippet(report: dict, configs: dict[str, int], out_dir: Path, repo_id: str | None) -> tuple[str, str]:
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
        f'train_dataset = load_dataset("{_repo(report, repo_id)}", "triplets", split="train")\n'
    )
    return local, hub


def _repo(report: dict, repo_id: str | None) -> str:
    return repo_id or f"YOUR_NAMESPACE/{slug((report.get('recipe') or {}).get('name'))}"


def provenance_section(report: dict, configs: dict[str, int], repo_id: str | None) -> list[str]:
    """How to join a layout config with its ``*_provenance`` config (row i <-> row_id i)."""
    from synth.formats.st import PROVENANCE_SUFFIX, ROW_ID

    pairs = [
        (c[: -len(PROVENANCE_SUFFIX)], c)
        for c in configs
        if c.endswith(PROVENANCE_SUFFIX) and c[: -len(PROVENANCE_SUFFIX)] in configs
    ]
    if not pairs:
        return []
    repo = _repo(report, repo_id)
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
        "```python",
        "from datasets import concatenate_datasets, load_dataset",
        "",
        f'rows = load_dataset("{repo}", "{pairs[0][0]}", split="train")',
        f'provenance = load_dataset("{repo}", "{pairs[0][1]}", split="train")',
        "joined = concatenate_datasets([rows, provenance], axis=1)  # row i with its provenance",
        "```",
        "",
    ]


def training_snippet(report: dict) -> str:
    recipe = report.get("recipe") or {}
    model = str((recipe.get("embed") or {}).get("model") or BUNDLED_EMBEDDER_HUB_ID)
    if model.startswith("bundled:"):
        model = BUNDLED_EMBEDDER_HUB_ID
    layout = LAYOUTS.get((report.get("output") or {}).get("format")) or LAYOUTS["n-tuple"]
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


def _front_matter(report: dict, configs: dict[str, int], license_id: str, details: str | None) -> dict:
    recipe = report.get("recipe") or {}
    sampler = ((recipe.get("mine") or {}).get("sampler") or {}).get("kind")
    tags = ["synth", "hard-negatives", "sentence-transformers", "retrieval"]
    if sampler:
        tags.append(f"sampler-{sampler}")
    if recipe.get("synthetic_queries") or recipe.get("synthetic_negatives"):
        tags.append("synthetic")
    rows = configs.get("triplets", max(configs.values(), default=0))
    front = {"pretty_name": str(recipe.get("name") or "synth dataset"), "license": license_id}
    if license_id == "other":
        front["license_name"] = "mixed"
        front["license_details"] = details
    front.update(
        {"task_categories": ["sentence-similarity"], "tags": tags, "size_categories": [size_category(int(rows))]}
    )
    if configs:  # every config, so `load_dataset(DIR, name)` works; `synth push` puts the Hub's data files here
        front["configs"] = [
            {
                "config_name": name,
                "data_files": [{"split": "train", "path": f"dataset/{name}/data-*.arrow"}],
                **({"default": True} if name == "triplets" else {}),
            }
            for name in configs
        ]
    return front


def _judging_section(clean: dict) -> list[str]:
    """``## Judging``: final verdicts, one row per cascade stage, the risk models, the policy; then selection."""
    out: list[str] = []
    judging = clean.get("judging") or {}
    if judging:
        out += ["## Judging", ""]
        if isinstance(judging.get("final"), dict):
            final = ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in judging["final"].items())
            out += [f"Final verdicts: {final}.", ""]
        stages = [s for s in judging.get("stages") or [] if isinstance(s, dict)]
        if stages:
            cols = [
                "stage",
                "kind",
                "candidates",
                "reused",
                "judged",
                "negative",
                "false_negative",
                "uncertain",
                "failed",
                "seconds",
            ]
            out += [_table(cols, [[s.get(c) for c in cols] for s in stages]), ""]
        out += [_model_line(s) for s in stages if isinstance(s.get("model_report"), dict)]
        if isinstance(judging.get("policy"), dict):
            policy = ", ".join(f"{md_text(k)} {md_text(_fmt(v))}" for k, v in judging["policy"].items())
            out += [f"Policy: {policy}.", ""]
    selection = clean.get("selection") or {}
    if selection:
        out += [
            f"Selection: {selection.get('pairs_full')} of {selection.get('pairs')} pairs got all their negatives "
            f"({selection.get('pairs_backfilled')} with backfill from further down the ranking); short: "
            + ", ".join(f"{k} {v}" for k, v in (selection.get("short_reasons") or {}).items())
            + ".",
            "",
        ]
    return out


def render_card(report: dict, configs: dict[str, int], out_dir: Path, repo_id: str | None = None) -> str:
    clean, secrets = scrub_secrets(report)
    recipe = clean.get("recipe") or {}
    parts = license_parts(clean)
    license_id, details = combine_licenses(parts)
    front = _front_matter(clean, configs, license_id, details)
    out: list[str] = ["---", safe_yaml(front).rstrip(), "---", ""]
    output = clean.get("output") or {}
    source = recipe.get("source") or {}
    sampler = ((recipe.get("mine") or {}).get("sampler") or {}).get("kind", "none")
    out += [
        f"# {md_text(front['pretty_name'])}",
        "",
        f"Training data for dense retrievers made by synth from the "
        f"{md_code(source.get('kind', '?'))} source {md_code(source.get('path', '?'))}: (query, positive) pairs "
        f"with hard negatives mined by the {md_code(sampler)} sampler, in the {md_code(output.get('format', '?'))} "
        f"layout (text columns {', '.join(md_code(c) for c in train_columns(clean))}; the provenance that says where "
        f"every row came from is in the parallel `triplets_provenance` config). Seed: **{clean.get('seed', recipe.get('seed'))}**.",
        "",
    ]

    if clean.get("notices"):  # what the run must not keep quiet, before anything else
        out += ["## Warnings", "", *[f"- {md_text(line)}" for line in clean["notices"]], ""]

    out += [
        "## Licence",
        "",
        md_code(f"license: {license_id}") + (f" — the parts differ: {md_text(details)}." if details else "."),
        "",
        _table(["part", "licence"], [[role, lic] for role, lic in parts.items()]),
        "",
        "Check each part's terms (the corpus's and the personas' licences, the model licences of the "
        "embedder, LLM and judges) before redistributing or training on this data.",
        "",
    ]

    out += ["## Configs", "", _table(["config", "rows"], [[k, v] for k, v in configs.items()]), ""]
    if isinstance(clean.get("mix"), dict):
        out += ["Negatives per source (`mix`):", "", _table(["", "count"], list(clean["mix"].items())), ""]

    local, hub = loading_snippet(clean, configs, out_dir, repo_id)
    out += [
        "## How to load and train",
        "",
        "From this folder:",
        "",
        "```python",
        local.rstrip(),
        "```",
        "",
        "From the Hub:",
        "",
        "```python",
        hub.rstrip(),
        "```",
        "",
        "Each layout config holds only the columns sentence-transformers takes (it tokenises every column "
        "that is not a label), so it trains as loaded:",
        "",
        "```python",
        training_snippet(clean).rstrip(),
        "```",
        "",
    ]
    out += provenance_section(clean, configs, repo_id)

    scores = clean.get("scores") or {}
    described = [(k, v) for k, v in scores.items() if isinstance(v, dict)]
    if described:
        stat_keys = ["count", "mean", "min", "p5", "median", "p95", "max"]
        out += [
            "## Scores",
            "",
            f"Score space: {md_code(scores.get('space', '?'))} (the embedder's similarity).",
            "",
            _table(["scores", *stat_keys], [[k, *(v.get(s) for s in stat_keys)] for k, v in described]),
            "",
        ]

    out += _judging_section(clean)
    for key, title in (("leakage", "Leakage"), ("fn_probe", "False-negative probe")):
        if isinstance(clean.get(key), dict) and clean[key]:
            flat = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in clean[key].items()]
            line = [md_text(probe_summary(clean[key])) + ".", ""] if key == "fn_probe" else []
            out += [f"## {title}", "", *line, _table(["", "value"], flat), ""]

    out += [
        "## Models and prompts",
        "",
        _table(["role", "model", "detail"], [[m["role"], m["model"], m["detail"]] for m in models_used(clean)]),
        "",
    ]
    hashes = prompt_hashes(clean)
    hashes += [h for h in prompt_hashes_on_disk(out_dir) if all(h[1] != k for _, k in hashes)]
    if hashes:
        out += [
            "Prompt hashes (sha256 of the Jinja2 template and its answer schema; rows carry them too):",
            "",
            _table(["where", "sha256"], [[w, f"`{h}`"] for w, h in hashes]),
            "",
        ]
    llm = clean.get("llm") or {}
    if llm.get("requests_sent") or llm.get("cache_hits"):
        out += [
            f"LLM requests sent {llm.get('requests_sent')}, cache hits {llm.get('cache_hits')}, tokens in "
            f"{llm.get('tokens_in')}, out {llm.get('tokens_out')}, cost (USD) {_fmt(llm.get('cost_usd'))}.",
            "",
        ]

    out += [
        "## Recipe",
        "",
        "The resolved recipe (every default filled in); `synth run` on it reproduces the data.",
        "",
        "```yaml",
        # without `engine`: where the stages ran (one process or a Ray cluster) does not change the data
        safe_yaml({key: value for key, value in recipe.items() if key != "engine"}).rstrip(),
        "```",
        "",
    ]
    env = clean.get("environment") or {}
    if env:
        out += ["Made with " + ", ".join(f"{k} {md_text(v)}" for k, v in env.items() if v) + ".", ""]
    return scrub_text("\n".join(out), secrets)


def write_card(out_dir: Path, report: dict, configs: dict[str, int], repo_id: str | None = None) -> Path:
    """Write ``out_dir/README.md`` atomically; returns its path. ``configs`` maps config name -> rows."""
    out_dir = Path(out_dir)
    text = render_card(report, configs, out_dir, repo_id)
    return atomic_write_text(out_dir / CARD, text)
