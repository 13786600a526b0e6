"""The runner: stage order, seed, timings, report, atomic output.

Stages: load -> personas -> synthetic_queries -> embed -> index -> filter_queries ->
synthetic_negatives -> mine (search + sample) -> judge -> mix -> leakage -> write. Each is a plain
function over records; judge and mix live in ``judging.py`` / ``mix.py``.
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
from synth.publish.formats import (CONFIG_NAMES, build_rows, grouped_by_query, negatives_from_mined, save_configs,
                                   score_summary, text_columns, write_beir, write_tevatron_file)
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


def licenses(recipe: Recipe, syn) -> dict:
    """role -> licence of everything the output is made from."""
    from synth.embed import BUNDLED_MODEL

    out = {"corpus": getattr(recipe.source, "license", "unknown")}
    if syn.personas:
        out["personas"] = syn.personas[0].license or "unknown"
    if recipe.llm is not None:
        # the embedded default is SmolLM2-135M-Instruct (Apache-2.0); other backends: see their model cards
        from synth.llm.config import BUNDLED_LLM

        out["llm"] = "apache-2.0" if recipe.llm.kind == "local" and recipe.llm.model == BUNDLED_LLM \
            else "unknown (see the model card)"
    out["embedder"] = "apache-2.0" if recipe.embed.model == BUNDLED_MODEL else "unknown (see the model card)"
    return out


def run_recipe(recipe: Recipe, out: str | Path) -> dict:
    """Run every stage and write ``out/dataset`` (a DatasetDict of named configs), ``out/report.json``,
    the card and the HTML report (and the files ``output.files`` asks for)."""
    from synth import judging
    from synth import synthetic as syn_stages
    from synth.leakage import check_pairs, load_eval_split, not_checked
    from synth.mix import mix, synthetic_by_pair

    out = Path(out).resolve()
    stages = Stages()
    started = time.time()
    cascade = judging.load_run_cascade(recipe) if recipe.judge is not None else None
    tmp = prepare_out_dir(out)
    client = syn_stages.open_client(recipe)
    try:
        report: dict = {"recipe": recipe.model_dump(mode="json"), "seed": recipe.seed}
        with stages.stage("load") as st:
            data = load_source(recipe.source)
            st["rows"] = sum(1 for pos in data.qrels.values() for g in pos.values() if g > 0)
            st.update(corpus=len(data.corpus), queries=len(data.queries))
        report["input_findings"] = data.findings.as_dict()
        source_fp = judging.source_fingerprint(data) if cascade is not None else ""
        source_qrels = {q: dict(d) for q, d in data.qrels.items()}  # before synthetic pairs join

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

        mined = query_emb = None
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

        negatives = None  # per pair; None: the mined picks as they are (no judge, no mix)
        judged = None
        if mined is not None and (recipe.judge is not None or recipe.mix is not None):
            pool = negatives_from_mined(mined, data.corpus)
            n_synthetic = recipe.mix.synthetic if recipe.mix else 0
            synthetic = synthetic_by_pair(pairs.query_ids, pairs.positive_ids, pairs.query_rows, syn.negatives,
                                          query_emb, embed_passages) if n_synthetic else [[] for _ in pool]
            kept: list = [{x.id for x in a + b} for a, b in zip(pool, synthetic)]
            if cascade is not None:
                with stages.stage("judge") as st:
                    ce_info = None
                    cache = Path(cfg.cache_dir)
                    if judging.needs_training(cascade):
                        ce_info = judging.trained_cross_encoder(recipe, data, source_qrels, source_fp, cache)
                        judging.resolve_trained_models(cascade, ce_info["path"])
                    judged = judging.judge_pairs(
                        recipe, cascade, pairs, data, mined.positive_scores.tolist(), pool, synthetic,
                        judging.store_dir_for(cache, source_fp, cascade), client, prompts, ce_info)
                    kept = judged.kept
                    st["rows"] = judged.report["candidates"]["unique"]
                report["judging"] = judged.report
            with stages.stage("mix") as st:
                n_mined = recipe.mix.mined if recipe.mix else n
                negatives, mix_stats = mix([data.corpus.texts[r] for r in pairs.positive_rows.tolist()], pool,
                                           synthetic, kept, n_mined, n_synthetic)
                n = n_mined + n_synthetic
                st["rows"] = sum(len(x) for x in negatives if x is not None)
            report["mix"] = mix_stats.as_dict()
        if needs_encoder:
            report["embedding"] = embed_stats.as_dict()

        qprov = syn_stages.query_provenance(syn)
        report["leakage"] = not_checked("no leakage section in the recipe")
        if recipe.leakage is not None:
            with stages.stage("leakage") as st:
                negatives, report["leakage"] = leakage_stage(recipe, pairs, data, mined, negatives, qprov,
                                                             check_pairs, load_eval_split, not_checked)
                st["rows"] = report["leakage"].get("pairs_checked", 0)

        with stages.stage("write") as st:
            configs, output = write_outputs(recipe, tmp, fmt, n, pairs, mined, data, qprov, negatives, judged, syn)
            st["rows"] = len(configs["triplets"])
        report.update(syn.report)
        report["llm"] = client.accounting.report() if client else Accounting().report()
        report["output"] = output
        report["licenses"] = licenses(recipe, syn)
        report["stages"] = stages.report
        report["environment"] = environment()
        report["started_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
        report["seconds"] = round(time.time() - started, 3)
        from synth.publish.card import write_card
        from synth.publish.report import write_report_html

        write_card(tmp, report, {name: len(ds) for name, ds in configs.items()})
        write_report_html(tmp, report, triplets=configs["triplets"])
        (tmp / REPORT).write_text(json.dumps(report, indent=2, default=json_default))
        publish_dir(tmp, out)
        return report
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if client is not None:
            client.close()


def leakage_stage(recipe: Recipe, pairs, data: SourceData, mined, negatives, qprov: dict, check_pairs,
                  load_eval_split, not_checked):
    """Count (and with ``drop`` remove) training pairs that overlap the evaluation split."""
    cfg = recipe.leakage
    folder = cfg.path or (recipe.source.path if recipe.source.kind == "beir" else None)
    if folder is None:
        return negatives, not_checked(f"source kind {recipe.source.kind!r}: set leakage.path to a BEIR folder")
    ev = load_eval_split(folder, cfg.split)
    if ev is None:
        return negatives, not_checked(f"{folder}: no qrels/{cfg.split}.tsv")
    if negatives is None:
        negatives = negatives_from_mined(mined, data.corpus) if mined is not None else [[] for _ in range(len(pairs))]
    neg_ids = [None if negs is None else [x.id for x in negs] for negs in negatives]
    overlapping, rep = check_pairs(ev, pairs.query_ids, [data.queries.texts[r] for r in pairs.query_rows.tolist()],
                                   pairs.positive_ids, neg_ids,
                                   [qprov.get(q, {}).get("query_origin", "real") for q in pairs.query_ids])
    rep["drop"] = cfg.drop
    rep["pairs_dropped"] = sum(overlapping) if cfg.drop else 0
    if cfg.drop:
        negatives = [None if o else negs for negs, o in zip(negatives, overlapping)]
    return negatives, rep


def write_outputs(recipe: Recipe, tmp: Path, fmt: str, n: int, pairs, mined, data: SourceData, qprov: dict,
                  negatives, judged, syn) -> tuple[dict, dict]:
    """``tmp/dataset`` (DatasetDict: triplets, extra formats, verdicts, synthetic configs) and the
    ``output.files``; returns the configs and the report's ``output`` section."""
    from synth import synthetic as syn_stages

    is_judged = judged is not None
    cols, counts = build_rows(fmt, n, pairs, mined, data.corpus, data.queries, qprov, negatives, is_judged)
    configs = {"triplets": datasets.Dataset.from_dict(cols)}
    for extra in recipe.output.extra_formats:
        extra_cols, _ = build_rows(extra, n, pairs, mined, data.corpus, data.queries, qprov, negatives, is_judged)
        configs.setdefault(CONFIG_NAMES[extra], datasets.Dataset.from_dict(extra_cols))
    if is_judged and judged.verdict_rows:
        configs["verdicts"] = datasets.Dataset.from_list(judged.verdict_rows)
    for name, rows in syn_stages.dataset_rows(syn, data).items():
        configs[name] = datasets.Dataset.from_list(rows)
    save_configs(configs, tmp / "dataset")
    files = {}
    if recipe.output.files:
        if negatives is None:
            negatives = negatives_from_mined(mined, data.corpus) if mined is not None else [[] for _ in range(len(pairs))]
        groups = grouped_by_query(pairs, data.corpus, data.queries, negatives, judged.promoted if is_judged else [])
        if "tevatron" in recipe.output.files:
            files["tevatron"] = {"path": "tevatron/train.jsonl",
                                 **write_tevatron_file(groups, tmp / "tevatron" / "train.jsonl")}
        if "beir" in recipe.output.files:
            files["beir"] = {"path": "beir", **write_beir(groups, data.corpus, tmp / "beir")}
    dataset = configs["triplets"]
    output = {"format": fmt, "rows": len(dataset), **counts, "train_columns": text_columns(fmt, n),
              "columns": dataset.column_names, "configs": {name: len(ds) for name, ds in configs.items()},
              "files": files}
    return configs, output


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
