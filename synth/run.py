"""The runner: stage order, seed, timings, report, atomic output.

Stages: load -> embed -> mine (search + sample) -> write. Each is a plain function over records.
Output goes to a sibling temporary folder that is renamed onto ``--out`` only when complete, so a
crash never leaves a half-written dataset. The embedding cache (``embed.py``) makes a killed run
resume without re-encoding finished chunks.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import datasets
import numpy as np

from synth.embed import EmbedStats, Encoder, embed_texts
from synth.errors import UserError
from synth.index import Searcher
from synth.jsonio import json_default
from synth.llm.accounting import Accounting
from synth.mine import build_pairs, mine
from synth.publish.formats import build_rows, score_summary, text_columns
from synth.recipe import Recipe
from synth.records import SourceData
from synth.sources import load_source

log = logging.getLogger("synth.run")

REPORT = "report.json"


class Stages:
    def __init__(self) -> None:
        self.report: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        entry = {"rows": 0, "seconds": 0.0}
        t0 = time.perf_counter()
        yield entry
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        self.report[name] = entry
        log.info("stage %-6s %8d rows  %7.2fs", name, entry["rows"], entry["seconds"])


def environment() -> dict:
    # Versions from package metadata: importing torch / sentence-transformers just to read their
    # version would cost seconds on a fully cached rerun.
    from importlib.metadata import PackageNotFoundError, version

    from synth import __version__

    def ver(dist: str) -> str | None:
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    return {
        "synth": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": ver("torch"),
        "faiss": ver("faiss-cpu") or ver("faiss-gpu-cu12") or ver("faiss"),
        "sentence_transformers": ver("sentence-transformers"),
        "openai": ver("openai"),
        "xllamacpp": ver("xllamacpp"),
        "vllm": ver("vllm"),
    }


def embed_stage(recipe: Recipe, data: SourceData, stats: EmbedStats) -> tuple[np.ndarray, np.ndarray]:
    cfg = recipe.embed
    encoder = Encoder(cfg.model, cfg.max_seq_length, cfg.batch_size, cfg.normalize, cfg.device)
    corpus_emb = embed_texts(encoder, data.corpus.texts, cfg.passage_prompt, cfg.cache_dir, cfg.chunk_rows, "corpus", stats)
    query_emb = embed_texts(encoder, data.queries.texts, cfg.query_prompt, cfg.cache_dir, cfg.chunk_rows, "queries", stats)
    return corpus_emb, query_emb


def prepare_out_dir(out: Path) -> Path:
    """A sibling temp folder to write into. An existing ``out`` is replaced only if it is a synth output."""
    if out.exists() and not (out / REPORT).exists():
        if not out.is_dir() or any(out.iterdir()):
            raise UserError(f"--out {out}: exists and is not a synth output folder; choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, out: Path) -> None:
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def run_recipe(recipe: Recipe, out: str | Path) -> dict:
    """Run every stage and write ``out/dataset`` (plus the synthetic datasets) and ``out/report.json``."""
    from synth import synthetic as syn_stages

    out = Path(out).resolve()
    stages = Stages()
    started = time.time()
    tmp = prepare_out_dir(out)
    client = syn_stages.open_client(recipe)
    try:
        report: dict = {"recipe": recipe.model_dump(mode="json"), "seed": recipe.seed}
        with stages.stage("load") as st:
            data = load_source(recipe.source)
            st["rows"] = sum(1 for pos in data.qrels.values() for g in pos.values() if g > 0)
            st.update(corpus=len(data.corpus), queries=len(data.queries))
        report["input_findings"] = data.findings.as_dict()

        syn = syn_stages.Synthetic()
        prompts = syn_stages.prompt_library(recipe)
        if recipe.personas is not None:
            with stages.stage("personas") as st:
                syn_stages.personas_stage(recipe, data, client, prompts, syn)
                st["rows"] = len(syn.personas)
        if recipe.synthetic_queries is not None:
            with stages.stage("synthetic_queries") as st:
                syn_stages.queries_stage(recipe, data, client, prompts, syn)
                st["rows"] = len(syn.candidates)

        fmt = recipe.output.format
        needs_index = fmt != "pairs" or recipe.synthetic_queries is not None
        needs_encoder = needs_index or recipe.synthetic_negatives is not None
        embed_stats = EmbedStats()
        cfg = recipe.embed
        encoder = Encoder(cfg.model, cfg.max_seq_length, cfg.batch_size, cfg.normalize, cfg.device) if needs_encoder else None

        def embed_queries(texts: list[str]) -> np.ndarray:
            return embed_texts(encoder, texts, cfg.query_prompt, cfg.cache_dir, cfg.chunk_rows, "queries", embed_stats)

        def embed_passages(texts: list[str]) -> np.ndarray:
            return embed_texts(encoder, texts, cfg.passage_prompt, cfg.cache_dir, cfg.chunk_rows, "passages", embed_stats)

        searcher = corpus_emb = None
        if needs_index:
            with stages.stage("embed") as st:
                corpus_emb = embed_texts(encoder, data.corpus.texts, cfg.passage_prompt, cfg.cache_dir,
                                         cfg.chunk_rows, "corpus", embed_stats)
                st["rows"] = len(data.corpus)
            with stages.stage("index") as st:
                searcher = Searcher.from_config(recipe.index, corpus_emb, recipe.seed)
                st["rows"] = len(data.corpus)
        if recipe.synthetic_queries is not None:
            with stages.stage("filter_queries") as st:
                syn_stages.filter_stage(recipe, data, syn, embed_queries, corpus_emb, searcher)
                syn_stages.add_synthetic_pairs(data, syn.kept)
                st["rows"] = len(syn.kept)
        pairs = build_pairs(data)
        if len(pairs) == 0:
            raise UserError(f"{recipe.source.path}: no (query, positive) pairs to mine")
        if recipe.synthetic_negatives is not None:
            with stages.stage("synthetic_negatives") as st:
                syn_stages.negatives_stage(recipe, data, client, prompts, syn, embed_passages)
                st["rows"] = len(syn.negatives)

        mined = None
        n = recipe.mine.n_negatives if recipe.mine else 0
        if fmt != "pairs":
            with stages.stage("mine") as st:
                query_emb = embed_queries(data.queries.texts)
                mined, mine_stats = mine(data, pairs, corpus_emb, query_emb, searcher, recipe.mine,
                                         recipe.index.query_block, recipe.seed)
                st["rows"] = len(pairs)
            report["index"] = searcher.info.as_dict()
            report["mining"] = mine_stats.as_dict()
            report["scores"] = {"space": recipe.index.metric, **score_summary(mined)}
        if needs_encoder:
            report["embedding"] = embed_stats.as_dict()

        with stages.stage("write") as st:
            cols, counts = build_rows(fmt, n, pairs, mined, data.corpus, data.queries,
                                      syn_stages.query_provenance(syn))
            dataset = datasets.Dataset.from_dict(cols)
            dataset.save_to_disk(str(tmp / "dataset"))
            extra = syn_stages.write_datasets(syn, data, tmp)
            st["rows"] = len(dataset)
        report.update(syn.report)
        report["llm"] = client.accounting.report() if client else Accounting().report()
        report["output"] = {"format": fmt, "rows": len(dataset), **counts,
                            "train_columns": text_columns(fmt, n), "columns": dataset.column_names,
                            "synthetic_datasets": extra}
        report["stages"] = stages.report
        report["environment"] = environment()
        report["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        report["seconds"] = round(time.time() - started, 3)
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=json_default))
        publish_dir(tmp, out)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if client is not None:
            client.close()


def plan_recipe(recipe: Recipe) -> dict:
    """``synth run --dry-run``: the LLM requests each stage would send, token upper bounds and cost.
    Loads the source and reads the request cache; sends nothing and writes nothing."""
    from synth import synthetic as syn_stages

    data = load_source(recipe.source)
    client = syn_stages.open_client(recipe)
    if client is None:
        return {"stages": [], "totals": {"requests": 0, "to_send": 0}}
    rows = syn_stages.plan(recipe, data, client, syn_stages.prompt_library(recipe))
    totals: dict = {k: sum(r[k] for r in rows) for k in ("requests", "cached", "to_send", "tokens_in_upper",
                                                          "tokens_out_upper", "tokens_in_estimate")}
    costs = [r["cost_usd_upper"] for r in rows]
    totals["cost_usd_upper"] = None if any(c is None for c in costs) and any(r["to_send"] for r in rows) \
        else round(sum(c or 0.0 for c in costs), 6)
    return {"stages": rows, "totals": totals, "budget": recipe.budget.model_dump() if recipe.budget else None}
