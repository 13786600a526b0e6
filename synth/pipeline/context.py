"""What the stages of one run share: the recipe, the data as each stage leaves it, the LLM client pool
and the report. ``open_context`` is the one way a command (run, dry run, probe) opens it."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from synth.embed import EmbedStats, embed_texts
from synth.llm.prompts import PromptLibrary

if TYPE_CHECKING:
    from synth.core.records import Mined, Pairs, Qrels, SourceData
    from synth.embed import EmbedStats, Encoder
    from synth.engine.base import Engine
    from synth.generate.records import Persona, SyntheticNegative, SyntheticQuery
    from synth.index import Searcher
    from synth.llm.pool import ClientPool
    from synth.llm.prompts import PromptLibrary
    from synth.recipe import Recipe
    from synth.select.backfill import Backfill

log = logging.getLogger("synth.pipeline.run")


@dataclass
class RunContext:
    """One run's shared state. ``open_context`` opens the fields in ``OPENED``; every other field is written by
    the stage that declares it in ``Stage.writes`` (``synth.pipeline.stages``) and read by the stages after it."""

    recipe: Recipe
    out_tmp: Path | None = None  # the folder being written; None when nothing is written (the probe)
    report: dict = field(default_factory=dict)  # report.json's sections, each a ``RunReport`` field
    timings: dict[str, dict] = field(default_factory=dict)
    llm: ClientPool | None = None  # every LLM client of the run (a ``PlanningPool`` in a dry run)
    prompts: PromptLibrary | None = None
    engine: Engine | None = None  # where embedding, search and LLM requests run
    encoder: Encoder | None = None  # opened on first use (``open_encoder``)
    embed_stats: EmbedStats | None = None
    notices: list[str] = field(default_factory=list)  # one line each: what the run must say out loud
    dry_run: bool = False  # the stages' dry-run versions run (``Stage.dry``)
    # written by the stages, in run order
    data: SourceData | None = None  # the source; the kept synthetic queries join it as pairs (filter_queries)
    source_qrels: Qrels | None = None  # the source's labelled positives before synthetic pairs joined
    source_fp: str = ""  # fingerprint of the source as loaded (keys the judge caches)
    personas: list[Persona] = field(default_factory=list)
    query_candidates: list[SyntheticQuery] = field(default_factory=list)  # every query the LLM wrote
    synthetic_queries: list[SyntheticQuery] = field(default_factory=list)  # the candidates the filters kept
    dropped_by: dict[str, str] = field(default_factory=dict)  # candidate id -> the filter that dropped it
    synthetic_negatives: list[SyntheticNegative] = field(default_factory=list)
    corpus_emb: np.ndarray | None = None
    query_emb: np.ndarray | None = None
    searcher: Searcher | None = None
    pairs: Pairs | None = None
    mined: Mined | None = None
    backfill: Backfill | None = None  # shared by mining and selection
    negatives: list | None = None  # per pair: the published negatives (None = pair dropped)
    judged: bool = False  # the judge cascade ran: the rows carry its verdicts
    verdict_rows: list[dict] = field(default_factory=list)
    promoted: list[tuple[str, str]] = field(default_factory=list)
    n: int = 0  # negatives per row in the output
    configs: dict = field(default_factory=dict)  # the dataset's configs as written

    @property
    def client(self):
        """The run's default LLM client (generation, LLM judges without their own ``llm``); None without one."""
        return self.llm() if self.llm is not None else None

    def close(self) -> None:
        try:
            if self.llm is not None:
                self.llm.close()
        finally:
            if self.engine is not None:
                self.engine.close()

    def engine_report(self) -> dict:
        """``report.json`` -> ``engine``: where the work ran, and each stage's wall seconds."""
        report = self.engine.report() if self.engine is not None else {}
        report["stage_seconds"] = {name: entry["seconds"] for name, entry in self.timings.items()}
        return report

    @contextmanager
    def stage(self, name: str) -> Iterator[dict]:
        entry = {"rows": 0, "seconds": 0.0}
        t0 = time.perf_counter()
        yield entry
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        self.timings[name] = entry
        log.info(
            "%s %-6s %8d rows  %7.2fs",
            "dry run: stage" if self.dry_run else "stage",
            name,
            entry["rows"],
            entry["seconds"],
        )

    def open_encoder(self):
        """The run's embedder, loaded on first use (a stage that needs none never loads it)."""
        if self.encoder is None:
            from synth.embed import Encoder

            cfg = self.recipe.embed
            self.encoder = Encoder(
                cfg.model, cfg.max_seq_length, cfg.batch_size, cfg.normalize, cfg.device, engine=self.engine
            )
        return self.encoder

    def embed_queries(self, texts: list[str]) -> np.ndarray:

        cfg = self.recipe.embed
        return embed_texts(
            self.encoder, texts, cfg.query_prompt, cfg.cache_dir, cfg.chunk_rows, "queries", self.embed_stats
        )

    def embed_passages(self, texts: list[str]) -> np.ndarray:

        cfg = self.recipe.embed
        return embed_texts(
            self.encoder, texts, cfg.passage_prompt, cfg.cache_dir, cfg.chunk_rows, "passages", self.embed_stats
        )

    def search(self, query_rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The run's top-k (scores, corpus rows) for these query rows, through the run's index."""
        parts = list(
            self.searcher.search(self.query_emb[np.asarray(query_rows, np.int64)], k, self.recipe.index.query_block)
        )
        if not parts:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def open_context(recipe, dry_run: bool = False) -> RunContext:
    """A context with the run's LLM client pool (clients open on first use; a ``PlanningPool`` that sends
    nothing in a dry run), prompts and embedding counters. Close it with ``close``."""
    from synth.engine import LocalEngine, open_engine
    from synth.llm.plan import PlanningPool
    from synth.llm.pool import ClientPool

    ctx = RunContext(recipe, report={"recipe": recipe.model_dump(mode="json"), "seed": recipe.seed}, dry_run=dry_run)
    # a dry run sends and computes nothing: never a cluster for it
    ctx.engine = LocalEngine() if dry_run else open_engine(recipe.engine, cache_dir=recipe.embed.cache_dir)
    ctx.llm = (PlanningPool if dry_run else ClientPool).for_recipe(recipe, engine=ctx.engine)
    ctx.prompts = PromptLibrary([Path(recipe.prompts_dir)] if recipe.prompts_dir else [])
    ctx.embed_stats = EmbedStats()
    return ctx


# The fields ``open_context`` sets (the encoder opens on first use): any stage may read them.
OPENED = ("recipe", "out_tmp", "report", "timings", "llm", "prompts", "engine", "encoder", "embed_stats")
OPENED += ("notices", "dry_run")
