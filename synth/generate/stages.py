"""The generation stages as the runner sees them: personas -> synthetic queries (filtered) ->
synthetic hard negatives, over one ``LLMClient`` (from the run's ``synth.llm.pool.ClientPool``).

The stage logic lives in ``synth.generate``; this module wires it to the run: it gives the stages
their client and prompts, gives the filters embeddings and a searcher, adds the kept
synthetic queries to the source data as (query, source document) pairs, and turns everything into
the rows of the extra dataset configs (personas, synthetic_queries, synthetic_negatives) and the
report sections.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from synth.generate import filters as gen_filters
from synth.generate.negatives import generate_negatives
from synth.generate.personas import load_personas
from synth.generate.quality import judge_queries
from synth.generate.queries import generate_queries
from synth.generate.quotas import hold_quotas
from synth.generate.records import Persona, SyntheticNegative, SyntheticQuery
from synth.llm.client import LLMClient
from synth.llm.prompts import PromptLibrary
from synth.recipe import Recipe
from synth.core.records import SourceData
from synth.core.seeding import stable_key, uniforms

log = logging.getLogger("synth.generate.stages")

Embed = Callable[[list[str]], np.ndarray]


def prompt_library(recipe: Recipe) -> PromptLibrary:
    return PromptLibrary([Path(recipe.prompts_dir)] if recipe.prompts_dir else [])


@dataclass
class Synthetic:
    personas: list[Persona] = field(default_factory=list)
    candidates: list[SyntheticQuery] = field(default_factory=list)
    kept: list[SyntheticQuery] = field(default_factory=list)
    dropped_by: dict[str, str] = field(default_factory=dict)  # candidate id -> filter name
    negatives: list[SyntheticNegative] = field(default_factory=list)
    report: dict = field(default_factory=dict)


def personas_stage(
    recipe: Recipe, data: SourceData, client: LLMClient | None, prompts: PromptLibrary, out: Synthetic
) -> None:
    out.personas, stats = load_personas(
        recipe.personas, data.corpus, client, prompts, recipe.seed, "personas", client_defaults=client_defaults(recipe)
    )
    out.report["personas"] = stats


def queries_stage(recipe: Recipe, data: SourceData, client: LLMClient, prompts: PromptLibrary, out: Synthetic) -> None:
    cfg = recipe.synthetic_queries
    out.candidates, stats = generate_queries(
        cfg, data.corpus, out.personas, client, prompts, recipe.seed, client_defaults(recipe)
    )
    out.report["synthetic_queries"] = {"generation": stats}
    if cfg.quality_judge is not None:
        out.candidates, judged = judge_queries(
            cfg.quality_judge, out.candidates, data.corpus, client, prompts, recipe.seed, client_defaults(recipe)
        )
        out.report["synthetic_queries"]["quality_judge"] = judged


def filter_stage(
    recipe: Recipe, data: SourceData, out: Synthetic, embed_queries: Embed, corpus_emb: np.ndarray, searcher
) -> None:
    cfg = recipe.synthetic_queries
    eval_texts = list(data.queries.texts) + gen_filters.load_eval_texts(cfg.filters.eval_queries)

    def top_rows(query_emb: np.ndarray, k: int) -> np.ndarray:
        blocks = [rows for _, _, rows in searcher.search(query_emb, k, recipe.index.query_block)]
        return np.concatenate(blocks) if blocks else np.empty((0, k), np.int64)

    judged = cfg.quality_judge is not None  # it ran at generation (a dry run plans its requests); it drops first
    candidates = [q for q in out.candidates if q.quality == "keep"] if judged else out.candidates
    kept, drops, dropped_by = gen_filters.filter_queries(
        candidates, cfg.filters, embed_queries, data.corpus, eval_texts, top_rows
    )
    if judged:
        failed = [q for q in out.candidates if q.quality != "keep"]
        drops = {"quality_judge": len(failed), **drops}
        dropped_by.update({q.id: "quality_judge" for q in failed})
    if cfg.type_quotas is not None:  # the filters do not drop every type alike: hold the quotas again
        mask = hold_quotas([q.id for q in kept], [q.query_type for q in kept], cfg.type_quotas, recipe.seed)
        drops["quota"] = mask.count(False)
        dropped_by.update({q.id: "quota" for q, ok in zip(kept, mask) if not ok})
        kept = [q for q, ok in zip(kept, mask) if ok]
    out.kept = kept
    out.dropped_by = dropped_by
    out.report["synthetic_queries"].update(candidates=len(out.candidates), kept=len(kept), dropped=drops)
    if cfg.type_quotas is not None or cfg.max_queries_per_doc is not None:
        documents = Counter(data.corpus.document_of(data.corpus.row_of[q.doc_id]) for q in kept)
        out.report["synthetic_queries"]["kept_by_type"] = dict(sorted(Counter(q.query_type for q in kept).items()))
        out.report["synthetic_queries"]["max_kept_per_document"] = max(documents.values(), default=0)


def unfiltered_stage(recipe: Recipe, out: Synthetic) -> None:
    """The dry run's stand-in for ``filter_stage`` (which needs the embedder and the index): every
    candidate is kept, cut to the longest text the filters let through, so the stages after it are
    planned for the most pairs and the longest queries they can get."""
    from dataclasses import replace

    max_chars = recipe.synthetic_queries.filters.max_chars
    out.kept = [q if len(q.text) <= max_chars else replace(q, text=q.text[:max_chars]) for q in out.candidates]


def add_synthetic_pairs(data: SourceData, kept: list[SyntheticQuery]) -> None:
    """Each kept synthetic query becomes a query whose one positive is the document it was written for."""
    for q in kept:
        data.queries.ids.append(q.id)
        data.queries.texts.append(q.text)
        data.qrels[q.id] = {q.doc_id: 1}
    data.queries.__dict__.pop("row_of", None)  # invalidate the cached id -> row map


def negative_pairs(recipe: Recipe, data: SourceData, kept: list[SyntheticQuery]) -> list[tuple[str, str, str, str]]:
    """(query_id, query_text, positive_id, positive_text) pairs that get LLM-written negatives; a seeded
    sample when ``max_pairs`` caps them."""
    cfg = recipe.synthetic_negatives
    synthetic_ids = {q.id for q in kept}
    rows = []
    for qid, positives in data.qrels.items():
        is_synth = qid in synthetic_ids
        if (cfg.pairs == "synthetic" and not is_synth) or (cfg.pairs == "real" and is_synth):
            continue
        if qid not in data.queries.row_of:
            continue
        for doc_id, grade in sorted(positives.items()):
            if grade > 0 and doc_id in data.corpus.row_of:
                rows.append(
                    (
                        qid,
                        data.queries.texts[data.queries.row_of[qid]],
                        doc_id,
                        data.corpus.texts[data.corpus.row_of[doc_id]],
                    )
                )
    return cap_pairs(rows, cfg.max_pairs, recipe.seed)


def cap_pairs(
    rows: list[tuple[str, str, str, str]], max_pairs: int | None, seed: int
) -> list[tuple[str, str, str, str]]:
    """A seeded sample of ``max_pairs`` rows that depends only on (seed, query id, positive id)."""
    if max_pairs is None or len(rows) <= max_pairs:
        return rows
    keys = np.array([stable_key(r[0], r[2]) for r in rows], dtype=np.uint64)
    order = np.argsort(uniforms(seed, keys, salt="synthetic_negatives.pairs", k=1)[:, 0], kind="stable")
    return [rows[i] for i in sorted(order[:max_pairs].tolist())]


def client_defaults(recipe: Recipe) -> dict:
    """Backend-level sampling defaults, sent with (and so keyed into) every request."""
    return {"temperature": recipe.llm.temperature, "top_p": recipe.llm.top_p} if recipe.llm else {}


def negatives_stage(
    recipe: Recipe, data: SourceData, client: LLMClient, prompts: PromptLibrary, out: Synthetic, embed_passages: Embed
) -> None:
    pairs = generate_negatives_stage(recipe, data, client, prompts, out)
    kept, drops = gen_filters.filter_negatives(
        out.negatives, recipe.synthetic_negatives, embed_passages, {p[2]: p[3] for p in pairs}
    )
    out.negatives = kept
    out.report["synthetic_negatives"].update(kept=len(kept), dropped=drops)


def generate_negatives_stage(
    recipe: Recipe, data: SourceData, client: LLMClient, prompts: PromptLibrary, out: Synthetic
) -> list[tuple[str, str, str, str]]:
    """The LLM half of ``negatives_stage``: every generated negative, unfiltered, in ``out.negatives``
    (what a dry run stops at: the filters send no request). Returns the pairs they were written for."""
    pairs = negative_pairs(recipe, data, out.kept)
    generated, stats = generate_negatives(
        recipe.synthetic_negatives, pairs, client, prompts, recipe.seed, client_defaults(recipe)
    )
    out.negatives = generated
    out.report["synthetic_negatives"] = {"pairs": len(pairs), "generation": stats, "generated": len(generated)}
    return pairs


def query_provenance(out: Synthetic, corpus=None) -> dict[str, dict]:
    """Provenance columns of the training rows whose query is synthetic. With a chunked corpus
    (``kind: corpus``) also the document and character offset of the chunk it was written from; with the
    quality judge, its verdict (``formats.rows.EXTRA_PROVENANCE``)."""
    rows = {}
    for q in out.kept:
        rows[q.id] = {
            "query_origin": "synthetic",
            "query_model": q.model,
            "query_prompt_sha256": q.prompt_sha256,
            "persona_id": q.persona_id,
            "query_type": q.query_type,
        }
        if corpus is not None:
            rows[q.id].update(_chunk_of(q.doc_id, corpus))
        if q.quality:
            rows[q.id]["query_quality"] = q.quality
    return rows


def _chunk_of(chunk_id: str, corpus) -> dict:
    if corpus.doc_ids is None:
        return {}
    row = corpus.row_of[chunk_id]
    return {"source_doc_id": corpus.doc_ids[row], "source_offset": corpus.offsets[row]}


def dataset_rows(out: Synthetic, data: SourceData) -> dict[str, list[dict]]:
    """Rows of the ``personas``, ``synthetic_queries`` (every candidate, with the filter that dropped it)
    and ``synthetic_negatives`` configs of the run's dataset; only the ones the recipe produced."""
    rows: dict[str, list[dict]] = {}
    rows["personas"] = [
        {
            "id": p.id,
            "persona": p.text,
            "origin": p.origin,
            "stratum": p.stratum,
            "source_doc_id": p.source_doc_id or "",
            "license": p.license or "",
        }
        for p in out.personas
    ]
    kept_ids = {q.id for q in out.kept}
    rows["synthetic_queries"] = [
        {
            "id": q.id,
            "query": q.text,
            "doc_id": q.doc_id,
            "persona_id": q.persona_id,
            "query_type": q.query_type,
            "model": q.model,
            "prompt": q.prompt,
            "prompt_sha256": q.prompt_sha256,
            "seed": q.seed,
            "request_key": q.request_key,
            "kept": q.id in kept_ids,
            "dropped_by": out.dropped_by.get(q.id, ""),
            **_chunk_of(q.doc_id, data.corpus),
            **({"quality": q.quality} if q.quality else {}),
        }
        for q in out.candidates
    ]
    corpus_row = data.corpus.row_of
    rows["synthetic_negatives"] = [
        {
            "id": n.id,
            "query_id": n.query_id,
            "query": n.query_text,
            "positive_id": n.positive_id,
            "positive": data.corpus.texts[corpus_row[n.positive_id]],
            "negative": n.text,
            "synthetic": True,
            "model": n.model,
            "prompt": n.prompt,
            "prompt_sha256": n.prompt_sha256,
            "seed": n.seed,
            "request_key": n.request_key,
        }
        for n in out.negatives
    ]
    return {name: r for name, r in rows.items() if r}
