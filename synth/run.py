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

import numpy as np

from synth.embed import EmbedStats, Encoder, embed_texts
from synth.errors import UserError
from synth.index import Searcher
from synth.jsonio import json_default
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
    import faiss
    import sentence_transformers
    import torch

    from synth import __version__

    return {
        "synth": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "sentence_transformers": sentence_transformers.__version__,
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
    """Run every stage and write ``out/dataset`` and ``out/report.json``. Returns the report."""
    import datasets

    out = Path(out).resolve()
    stages = Stages()
    started = time.time()
    tmp = prepare_out_dir(out)
    try:
        report: dict = {"recipe": recipe.model_dump(mode="json"), "seed": recipe.seed}
        with stages.stage("load") as st:
            data = load_source(recipe.source)
            pairs = build_pairs(data)
            st["rows"] = len(pairs)
            st.update(corpus=len(data.corpus), queries=len(data.queries))
        report["input_findings"] = data.findings.as_dict()
        if len(pairs) == 0:
            raise UserError(f"{recipe.source.path}: no (query, positive) pairs to mine")

        mined = None
        fmt = recipe.output.format
        n = recipe.mine.n_negatives if recipe.mine else 0
        if fmt != "pairs":
            embed_stats = EmbedStats()
            with stages.stage("embed") as st:
                corpus_emb, query_emb = embed_stage(recipe, data, embed_stats)
                st["rows"] = embed_stats.rows
            report["embedding"] = embed_stats.as_dict()
            with stages.stage("index") as st:
                searcher = Searcher.from_config(recipe.index, corpus_emb, recipe.seed)
                st["rows"] = len(data.corpus)
            with stages.stage("mine") as st:
                mined, mine_stats = mine(data, pairs, corpus_emb, query_emb, searcher, recipe.mine,
                                         recipe.index.query_block, recipe.seed)
                st["rows"] = len(pairs)
            report["index"] = searcher.info.as_dict()
            report["mining"] = mine_stats.as_dict()
            report["scores"] = {"space": recipe.index.metric, **score_summary(mined)}

        with stages.stage("write") as st:
            cols, counts = build_rows(fmt, n, pairs, mined, data.corpus, data.queries)
            dataset = datasets.Dataset.from_dict(cols)
            dataset.save_to_disk(str(tmp / "dataset"))
            st["rows"] = len(dataset)
        report["output"] = {"format": fmt, "rows": len(dataset), **counts,
                            "train_columns": text_columns(fmt, n), "columns": dataset.column_names}
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
