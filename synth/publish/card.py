"""The dataset card: ``DIR/README.md`` with Hugging Face front matter, written from the run's report.

The card reads a typed ``RunReport`` (``synth.report.run``): its optional sections (no
``judging`` without a judge, no ``scores`` without mining) render only when the run has them. The report
passes through ``scrub_report`` (``synth.publish.secrets``) first, and the rendered card through
``scrub_text``. The body sections are in ``synth.publish.card_sections``.
"""

from __future__ import annotations

import re
from pathlib import Path

from synth.core.files import atomic_write_text
from synth.report.files import FnProbeResult
from synth.report.run import RunReport
from synth.publish import card_sections as sec
from synth.publish.escape import md_code, md_text, safe_yaml
from synth.publish.secrets import scrub_report, scrub_text

CARD = "README.md"

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


def license_parts(report: RunReport) -> dict[str, str]:
    """Role -> licence of each part the run says the output is made from (``report.licenses``)."""
    return {str(k): str(v) for k, v in report.licenses.model_dump().items() if v is not None}


# ---------------------------------------------------------------- what the card says


def size_category(rows: int) -> str:
    for bound, name in _SIZE_BUCKETS:
        if rows < bound:
            return name
    return "n>1B"


def models_used(report: RunReport) -> list[dict]:
    """Embedder, LLM(s) and judges: ``{"role", "model", "detail"}`` rows."""
    recipe = report.recipe  # the resolved recipe: a dict whose schema is `synth schema`
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
    for stage, entry in report.llm.stages.items():
        for model in entry.models:
            out.append(
                {
                    "role": f"llm ({stage})",
                    "model": str(model),
                    "detail": "as served (name, @ weights hash for local models)",
                }
            )
    return out + _judge_models(report)


def _judge_models(report: RunReport) -> list[dict]:
    """One row per stage of the cascade as run (``judging.cascade.resolved``: the cascade file's schema)."""
    if report.judging is None:
        return []
    out = []
    for stage in report.judging.cascade.resolved.get("stages") or []:
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


def prompt_hashes(report: RunReport) -> list[tuple[str, str]]:
    """Every (where, sha256) the report records for a prompt, in report order, without repeats. A walk over
    the whole report, not a list of fields: a prompt hash may sit in any section (the recipe included)."""
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

    walk(report.model_dump(exclude_none=True), "")
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


def probe_summary(r: FnProbeResult) -> str:
    """A false-negative probe in one line: FN against plain top-n's, hardness against the limit, shortfall
    (``synth fn-probe``'s output line)."""

    def fig(x) -> str:  # a probe that mined nothing has no rate and no rank
        return "-" if not isinstance(x, (int, float)) else f"{x:.3f}" if x < 1 else f"{x:.1f}"

    def times(x) -> str:
        return "-" if not isinstance(x, (int, float)) else f"{x:.2f}x" if x < 1 else f"{x:.1f}x"

    n = r.n
    return (
        f"FN {fig(r.fn_rate)} = {times(r.fn_vs_topk)} top-{n}'s {fig(r.topk_fn_rate)}, "
        f"at mean rank {fig(r.mean_rank)} = {times(r.rank_vs_oracle)} the hardness limit "
        f"{fig(r.oracle_mean_rank)} (median rank {fig(r.median_rank)}); "
        f"queries short of {n}: {r.queries_short} / {r.probed_queries}"
    )


def _front_matter(report: RunReport, configs: dict[str, int], license_id: str, details: str | None) -> dict:
    recipe = report.recipe
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


def _title(report: RunReport, front: dict) -> list[str]:
    recipe, output = report.recipe, report.output
    source = recipe.get("source") or {}
    sampler = ((recipe.get("mine") or {}).get("sampler") or {}).get("kind", "none")
    columns = ", ".join(md_code(c) for c in sec.train_columns(report))
    return [
        f"# {md_text(front['pretty_name'])}",
        "",
        f"Training data for dense retrievers made by synth from the "
        f"{md_code(source.get('kind', '?'))} source {md_code(source.get('path', '?'))}: (query, positive) pairs "
        f"with hard negatives mined by the {md_code(sampler)} sampler, in the {md_code(output.format)} "
        f"layout (text columns {columns}; the provenance that says where "
        f"every row came from is in the parallel `triplets_provenance` config). Seed: **{report.seed}**.",
        "",
    ]


def _licence(parts: dict[str, str], license_id: str, details: str | None) -> list[str]:
    return [
        "## Licence",
        "",
        md_code(f"license: {license_id}") + (f" — the parts differ: {md_text(details)}." if details else "."),
        "",
        sec.table(["part", "licence"], [[role, lic] for role, lic in parts.items()]),
        "",
        "Check each part's terms (the corpus's and the personas' licences, the model licences of the "
        "embedder, LLM and judges) before redistributing or training on this data.",
        "",
    ]


def _configs(report: RunReport, configs: dict[str, int]) -> list[str]:
    out = ["## Configs", "", sec.table(["config", "rows"], [[k, v] for k, v in configs.items()]), ""]
    if report.mix is not None:
        mix = list(report.mix.model_dump().items())
        out += ["Negatives per source (`mix`):", "", sec.table(["", "count"], mix), ""]
    return out


def _models_and_prompts(report: RunReport, out_dir: Path) -> list[str]:
    rows = [[m["role"], m["model"], m["detail"]] for m in models_used(report)]
    out = ["## Models and prompts", "", sec.table(["role", "model", "detail"], rows), ""]
    hashes = prompt_hashes(report)
    hashes += [h for h in prompt_hashes_on_disk(out_dir) if all(h[1] != k for _, k in hashes)]
    if hashes:
        out += [
            "Prompt hashes (sha256 of the Jinja2 template and its answer schema; rows carry them too):",
            "",
            sec.table(["where", "sha256"], [[w, f"`{h}`"] for w, h in hashes]),
            "",
        ]
    llm = report.llm
    if llm.requests_sent or llm.cache_hits:
        out += [
            f"LLM requests sent {llm.requests_sent}, cache hits {llm.cache_hits}, tokens in "
            f"{llm.tokens_in}, out {llm.tokens_out}, cost (USD) {sec._fmt(llm.cost_usd)}.",
            "",
        ]
    return out


def render_card(report: RunReport, configs: dict[str, int], out_dir: Path, repo_id: str | None = None) -> str:
    clean, secrets = scrub_report(report)
    parts = license_parts(clean)
    license_id, details = combine_licenses(parts)
    front = _front_matter(clean, configs, license_id, details)
    out: list[str] = ["---", safe_yaml(front).rstrip(), "---", "", *_title(clean, front)]
    if clean.notices:  # what the run must not keep quiet, before anything else
        out += ["## Warnings", "", *[f"- {md_text(line)}" for line in clean.notices], ""]
    out += _licence(parts, license_id, details)
    out += _configs(clean, configs)
    out += sec.loading_section(clean, out_dir, repo_id)
    out += sec.provenance_section(clean, configs, repo_id)
    out += sec.scores_section(clean)
    out += sec.judging_section(clean)
    out += sec.leakage_section(clean)
    out += _models_and_prompts(clean, out_dir)
    out += sec.recipe_section(clean)
    out += sec.environment_line(clean)
    return scrub_text("\n".join(out), secrets)


def write_card(out_dir: Path, report: RunReport, configs: dict[str, int], repo_id: str | None = None) -> Path:
    """Write ``out_dir/README.md`` atomically; returns its path. ``configs`` maps config name -> rows."""
    out_dir = Path(out_dir)
    text = render_card(report, configs, out_dir, repo_id)
    return atomic_write_text(out_dir / CARD, text)
