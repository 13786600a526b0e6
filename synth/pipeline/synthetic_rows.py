"""The synthetic data of a run as rows: the provenance columns of training rows whose query is synthetic, and
the ``personas`` / ``synthetic_queries`` / ``synthetic_negatives`` configs of the run's dataset."""

from __future__ import annotations

from synth.core.records import Corpus, SourceData
from synth.generate.records import Persona, SyntheticNegative, SyntheticQuery


def query_provenance(kept: list[SyntheticQuery], corpus: Corpus | None = None) -> dict[str, dict]:
    """Provenance columns of the training rows whose query is synthetic. With a chunked corpus
    (``kind: corpus``) also the document and character offset of the chunk it was written from; with the
    quality judge, its verdict (``formats.rows.EXTRA_PROVENANCE``)."""
    rows = {}
    for q in kept:
        rows[q.id] = {
            "query_origin": "synthetic",
            "query_model": q.model,
            "query_prompt_sha256": q.prompt_sha256,
            "persona_id": q.persona_id,
            "query_type": q.query_type,
        }
        if corpus is not None:
            rows[q.id].update(chunk_of(q.doc_id, corpus))
        if q.quality:
            rows[q.id]["query_quality"] = q.quality
    return rows


def chunk_of(chunk_id: str, corpus: Corpus) -> dict:
    if corpus.doc_ids is None:
        return {}
    row = corpus.row_of[chunk_id]
    return {"source_doc_id": corpus.doc_ids[row], "source_offset": corpus.offsets[row]}


def dataset_rows(
    personas: list[Persona],
    candidates: list[SyntheticQuery],
    kept: list[SyntheticQuery],
    dropped_by: dict[str, str],
    negatives: list[SyntheticNegative],
    data: SourceData,
) -> dict[str, list[dict]]:
    """Rows of the ``personas``, ``synthetic_queries`` (every candidate, with the filter that dropped it)
    and ``synthetic_negatives`` configs; only the ones the run produced."""
    kept_ids = {q.id for q in kept}
    rows = {
        "personas": [_persona_row(p) for p in personas],
        "synthetic_queries": [_query_row(q, q.id in kept_ids, dropped_by, data.corpus) for q in candidates],
        "synthetic_negatives": [_negative_row(n, data.corpus) for n in negatives],
    }
    return {name: r for name, r in rows.items() if r}


def _persona_row(p: Persona) -> dict:
    return {
        "id": p.id,
        "persona": p.text,
        "origin": p.origin,
        "stratum": p.stratum,
        "source_doc_id": p.source_doc_id or "",
        "license": p.license or "",
    }


def _query_row(q: SyntheticQuery, kept: bool, dropped_by: dict[str, str], corpus: Corpus) -> dict:
    return {
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
        "kept": kept,
        "dropped_by": dropped_by.get(q.id, ""),
        **chunk_of(q.doc_id, corpus),
        **({"quality": q.quality} if q.quality else {}),
    }


def _negative_row(n: SyntheticNegative, corpus: Corpus) -> dict:
    return {
        "id": n.id,
        "query_id": n.query_id,
        "query": n.query_text,
        "positive_id": n.positive_id,
        "positive": corpus.texts[corpus.row_of[n.positive_id]],
        "negative": n.text,
        "synthetic": True,
        "model": n.model,
        "prompt": n.prompt,
        "prompt_sha256": n.prompt_sha256,
        "seed": n.seed,
        "request_key": n.request_key,
    }
