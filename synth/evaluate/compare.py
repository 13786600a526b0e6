"""Compare training sets by the retriever they train: entries x seeds -> a table of mean ± std.

An entry is a recipe (run with ``seed=S`` for every seed, then trained on), an existing run folder or
saved dataset (data produced elsewhere, trained with each seed), or ``base`` (the untrained model, a
reference row computed once: it does not depend on the seed). Every finished (entry, seed) cell is
stored in ``OUT/cells/<hash>.json``, keyed by everything that determines its numbers (the data, the
seed, the BEIR split, the training settings), so a rerun recomputes only what is missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from synth.core import outdir
from synth.embed import BUNDLED_MODEL
from synth.core.errors import UserError
from synth.core.strict import SEED_MAX
from synth.evaluate.train_eval import dataset_folder, evaluate_base, load_eval_data, train_and_evaluate
from synth.core.files import atomic_write_json, atomic_write_text
from synth.report.files import FnProbeResult
from synth.report.run import RunReport
from synth.evaluate.compare_table import BASE, Entry, add_anchor_deltas, aggregate, render_markdown

log = logging.getLogger("synth.compare")

REPORT = "report.json"


def parse_seeds(text: str | list) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; one clear error for anything else."""
    items = text if isinstance(text, list) else [s for s in str(text).replace(" ", "").split(",") if s]
    try:
        seeds = [int(s) for s in items]
    except (TypeError, ValueError):
        raise UserError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds:
        raise UserError("--seeds: expected at least one seed")
    if any(not 0 <= s <= SEED_MAX for s in seeds):
        raise UserError(f"--seeds: each seed must be in 0..{SEED_MAX}, got {text!r}")
    return list(dict.fromkeys(seeds))


def parse_entries(items: list[str | Path]) -> list[Entry]:
    """``base``, a recipe file, or a run / saved-dataset folder; labels made unique."""
    if not items:
        raise UserError("compare: expected at least one entry (a recipe, a run folder, or 'base')")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for item in items:
        if str(item) == BASE:
            entry = Entry(BASE, "base")
        else:
            path = Path(item)
            if path.is_dir():
                dataset_folder(path)  # fails early on a folder without a dataset
                name = path.resolve().name
                entry = Entry(path.resolve().parent.name if name == "dataset" else name, "run", path.resolve())
            elif path.is_file():
                entry = Entry(path.stem, "recipe", path.resolve())
            else:
                raise UserError(f"compare: entry {item}: no such recipe file or run folder (or 'base')")
        seen[entry.label] = seen.get(entry.label, 0) + 1
        if seen[entry.label] > 1:
            entry.label = f"{entry.label}-{seen[entry.label]}"
        entries.append(entry)
    return entries


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Identity of a saved dataset: its JSON files (which hold datasets' own fingerprints) and the
    names and sizes of its data files; cheap on large datasets, changed by any rewrite."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode())
        h.update(f.read_bytes() if f.suffix == ".json" else str(f.stat().st_size).encode())
    return h.hexdigest()[:24]


def beir_fingerprint(beir: Path, split: str) -> str:
    files = [beir / "qrels" / f"{split}.tsv", *sorted(beir.glob("corpus.jsonl*")), beir / "queries.jsonl"]
    return _sha([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()])[:24]


def _probe_figures(result: FnProbeResult) -> dict | None:
    if result.fn_rate is None:  # the probe mined nothing: no rate to compare
        return None
    return {
        "fn_rate": float(result.fn_rate),
        "mean_rank": result.mean_rank,
        "n": result.n,
        "probed_queries": result.probed_queries,
    }


def run_folder_probe(run_dir: Path) -> dict | None:
    """The false-negative probe of data produced elsewhere: ``fn_probe.json`` in the run folder (``synth
    fn-probe --out`` on it). A file that is not a probe of this synth (another tool's, an older layout)
    leaves the column empty, with a log line."""
    try:
        found = FnProbeResult.model_validate_json((run_dir / "fn_probe.json").read_text())
    except OSError:
        return None
    except ValidationError as e:
        log.info("compare: %s/fn_probe.json is not a synth fn-probe result: %s", run_dir, e.errors()[0]["loc"])
        return None
    return _probe_figures(found)


def recipe_probe(recipe, run_dir: Path) -> dict | None:
    """The false-negative probe (``synth fn-probe``) of a recipe on its own source, on the negatives it
    publishes (judged and mixed when the recipe says so); ``None`` for a recipe that mines nothing or
    a source with no query of two or more positives. Written to ``run_dir/fn_probe.json``."""
    from synth.evaluate.fn_probe import run_fn_probe

    if recipe.mine is None or recipe.output.format == "pairs":
        return None
    try:
        return _probe_figures(FnProbeResult.model_validate(run_fn_probe(recipe, run_dir)))
    except UserError as e:  # nothing to probe on this source: the column stays empty
        log.info("compare: no false-negative probe: %s", e)
        return None


def _load_recipe_for_seed(entry: Entry, seed: int, overrides: list[str]):
    from synth.recipe import load_recipe

    return load_recipe(entry.path, [*overrides, *entry.overrides, f"seed={seed}"])


def _recipe_identity(recipe) -> dict:
    dump = recipe.model_dump(mode="json")
    dump.get("embed", {}).pop("cache_dir", None)  # where embeddings are cached does not change the data
    dump.pop("engine", None)  # nor where the stages run (synth.engine: the same rows on every engine)
    return dump


def _produce_run(recipe, run_dir: Path) -> float:
    """Run the recipe into ``run_dir`` unless a finished run of the very same recipe is there."""
    from synth.publish.paths import public_paths
    from synth.pipeline.run import run_recipe

    try:
        # report.json holds the recipe with its paths made public (synth.publish.paths): compare like with like
        done = RunReport.model_validate_json((run_dir / REPORT).read_text()).recipe == public_paths(
            recipe.model_dump(mode="json"), getattr(recipe, "_recipe_dir", None), recipe.embed.cache_dir
        )
    except (OSError, ValueError):  # no report, or one an older synth wrote (pydantic's error is a ValueError)
        done = False
    if done:
        return 0.0
    t0 = time.perf_counter()
    run_recipe(recipe, run_dir)
    return round(time.perf_counter() - t0, 3)


def recipe_run_dir(out_dir: Path, label: str, seed: int) -> Path:
    """Where ``compare`` writes a recipe entry's run for one seed."""
    return out_dir / "runs" / f"{label}-seed{seed}"


def compare(
    entries: list[str | Path | Entry],
    beir: str | Path,
    seeds: list[int] | str,
    out_dir: str | Path,
    *,
    split: str = "test",
    overrides: list[str] | None = None,
    max_steps: int | None = None,
    epochs: float = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    max_seq_length: int = 256,
    base_model: str = BUNDLED_MODEL,
    probe: bool = True,
    probe_all_seeds: bool = True,
    anchor: str | None = None,
) -> list[dict]:
    """Train and evaluate every entry with every seed; write ``out_dir/compare.json`` and
    ``out_dir/compare.md``; return the table rows (one per entry, mean ± std over seeds). ``probe``:
    run the false-negative probe of every recipe entry on its source (run folders bring their own);
    ``probe_all_seeds=False`` probes with the first seed only: the probe re-runs the recipe's mining,
    judges and mix on a copy of the source, which for a judged or LLM recipe costs as much as the data.
    ``anchor``: an entry label; every other trained entry gets its Δ nDCG@10 against it with a paired
    bootstrap interval (``paired_bootstrap``) in the rows (``vs_anchor``)."""
    entries = list(entries) if entries and all(isinstance(e, Entry) for e in entries) else parse_entries(entries)
    seeds = parse_seeds(seeds)
    beir = Path(beir).resolve()
    load_eval_data(beir, split)  # a bad BEIR folder or split fails before any work
    out_dir = Path(out_dir).resolve()
    outdir.claim_in_place(out_dir, "compare")  # resumed in place, so never a folder synth did not write
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    settings = _training_settings(max_steps, epochs, batch_size, lr, max_seq_length, base_model)
    common = {"beir": str(beir), "beir_files": beir_fingerprint(beir, split), "split": split}
    plan = _Plan(beir, split, out_dir, seeds, list(overrides or []), settings, common, probe, probe_all_seeds)
    cells: dict[str, list[dict]] = {e.label: [] for e in entries}
    for seed in seeds:
        for entry in entries:
            if entry.kind == BASE and cells[entry.label]:
                continue  # the untrained model does not depend on the seed
            cells[entry.label].append(plan.cell(entry, seed))
    rows = [aggregate(e, cells[e.label]) for e in entries]
    if anchor is not None and anchor in cells:
        add_anchor_deltas(rows, cells, anchor)
    summary = {
        "beir": str(beir),
        "split": split,
        "seeds": seeds,
        "settings": settings,
        "overrides": plan.overrides,
        "rows": rows,
        "computed": plan.computed,
        "reused": plan.reused,
        "std": "sample standard deviation over seeds (n-1); 0 for a single value",
    }
    atomic_write_json(out_dir / "compare.json", summary)
    atomic_write_text(out_dir / "compare.md", render_markdown(summary))
    return rows


def _training_settings(max_steps, epochs, batch_size, lr, max_seq_length, base_model) -> dict:
    """Typed as the CLI types them, so 1 and 1.0 epochs are the same cell."""
    return {
        "max_steps": None if max_steps is None else int(max_steps),
        "epochs": float(epochs),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "max_seq_length": int(max_seq_length),
        "base_model": base_model,
    }


@dataclass
class _Plan:
    """What every cell of one ``compare`` shares, and the cells it computed or found already done."""

    beir: Path
    split: str
    out_dir: Path
    seeds: list[int]
    overrides: list[str]
    settings: dict
    common: dict  # the evaluation data every cell's key names: its folder, its files' fingerprint, the split
    probe: bool
    probe_all_seeds: bool
    computed: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def cell(self, entry: Entry, seed: int) -> dict:
        """One (entry, seed) cell: read back when an earlier compare wrote it, else produced, trained, evaluated
        (and probed), then written atomically, so a killed compare resumes at the first missing cell."""
        recipe = _load_recipe_for_seed(entry, seed, self.overrides) if entry.kind == "recipe" else None
        key = self._key(entry, recipe, seed)
        cell_path = self.out_dir / "cells" / f"{_sha(key)[:32]}.json"
        if cell_path.exists():
            self.reused.append(f"{entry.label}/{seed}")
            return json.loads(cell_path.read_text())
        log.info("compare: %s, seed %s", entry.label, seed)
        data_seconds, run_dir = 0.0, entry.path
        if entry.kind == "recipe":
            run_dir = recipe_run_dir(self.out_dir, entry.label, seed)
            data_seconds = _produce_run(recipe, run_dir)
        if entry.kind == "base":
            result = evaluate_base(
                self.beir,
                self.split,
                base_model=self.settings["base_model"],
                max_seq_length=self.settings["max_seq_length"],
            )
        else:
            result = train_and_evaluate(
                run_dir, self.beir, split=self.split, seed=seed, work_dir=self.out_dir / "work", **self.settings
            )
        cell = {
            "entry": entry.label,
            "kind": entry.kind,
            "path": str(entry.path) if entry.path else None,
            "seed": None if entry.kind == "base" else seed,
            "key": key,
            "run_dir": str(run_dir) if run_dir else None,
            "fn_probe": self._probe(entry, recipe, run_dir, seed),
            "data_seconds": data_seconds,
            **result,
        }
        atomic_write_json(cell_path, cell)
        self.computed.append(f"{entry.label}/{seed}")
        return cell

    def _key(self, entry: Entry, recipe, seed: int) -> dict:
        """What a cell's result depends on: its cell file is named by this key's hash."""
        if entry.kind == "base":
            identity = {"base_model": self.settings["base_model"], "max_seq_length": self.settings["max_seq_length"]}
        elif entry.kind == "recipe":
            identity = {"recipe": _recipe_identity(recipe)}
        else:
            identity = {"dataset": folder_fingerprint(dataset_folder(entry.path))}
        return {
            "kind": entry.kind,
            **identity,
            **self.common,
            **({} if entry.kind == "base" else {"seed": seed, **self.settings}),
        }

    def _probe(self, entry: Entry, recipe, run_dir, seed: int) -> dict | None:
        if entry.kind == "recipe" and self.probe and (self.probe_all_seeds or seed == self.seeds[0]):
            return recipe_probe(recipe, run_dir)
        if entry.kind == "run":
            return run_folder_probe(run_dir)
        return None
