"""Recipe models for the LLM generation stages (``extra="forbid"``): personas, synthetic queries,
synthetic negatives. Paths are relative to the recipe file; the recipe loader makes them absolute.

Sampling parameters a section leaves unset (``temperature: null``) come from the LLM backend's
own defaults; ``max_tokens`` is always set here, because each prompt's answer has its own size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from synth.core.strict import StrictModel

QueryType = Literal["keyword", "question", "long-tail", "opinion", "short", "long"]
QUERY_TYPES: tuple[str, ...] = ("keyword", "question", "long-tail", "opinion", "short", "long")


class PersonasConfig(StrictModel):
    source: Literal["starter", "file", "generate"] = Field(
        "starter",
        description="starter: the ~40 personas shipped with synth (Apache-2.0); file: your own personas; "
        "generate: derive one persona per sampled corpus document with the LLM (text-to-persona)",
    )
    path: str | None = Field(
        None,
        description="for source: file. JSONL with a 'persona' text field (optional 'id', 'stratum') per line, "
        "or a .txt file with one persona per line; relative to the recipe",
    )
    license: str | None = Field(
        None,
        description="license of the persona texts, copied to the dataset card (e.g. 'CC BY-NC-SA 4.0' for Persona "
        "Hub). Default: Apache-2.0 for the starter set, unspecified otherwise",
    )
    n: int = Field(20, gt=0, description="personas to use (sampled, seeded); all of them when fewer are available")
    stratify_by: Literal["stratum", "none"] = Field(
        "stratum", description="stratum: draw round-robin over the personas' strata so each is covered; none: uniform"
    )
    docs: int = Field(32, gt=0, description="for source: generate. Corpus documents sampled to derive personas from")
    prompt: str = Field("persona_from_doc", description="for source: generate. Prompt name (prompts/<name>.j2)")
    max_tokens: int = Field(96, gt=0, description="for source: generate. Cap on the answer's tokens")
    temperature: float | None = Field(None, ge=0, description="for source: generate. null: the backend's default")
    max_doc_chars: int = Field(1200, gt=0, description="documents are cut to this many characters before prompting")

    @model_validator(mode="after")
    def _path_for_file(self) -> PersonasConfig:
        if self.source == "file" and not self.path:
            raise ValueError("path: required when source is 'file'")
        if self.source != "file" and self.path:
            raise ValueError(f"path: only used with source: file (source is {self.source!r})")
        return self


class QueryFilters(StrictModel):
    min_chars: int = Field(4, ge=0, description="drop queries shorter than this (characters, after stripping)")
    max_chars: int = Field(400, gt=0, description="drop queries longer than this")
    dedup: bool = Field(
        True, description="drop exact duplicates (casefolded, whitespace collapsed, end punctuation stripped)"
    )
    near_dup_threshold: float | None = Field(
        0.95,
        gt=0,
        le=1,
        description="drop a query whose embedding cosine to an earlier kept query is at least this; null disables",
    )
    round_trip_k: int | None = Field(
        20,
        gt=0,
        description="Promptagator round-trip consistency: keep a query only if its source document is in the "
        "embedder's top-k for it; null disables",
    )
    leakage_guard: bool = Field(
        True, description="drop queries that reproduce (normalised, exactly) a source query or an eval_queries text"
    )
    eval_queries: list[str] = Field(
        default_factory=list,
        description="extra query files (BEIR queries.jsonl, JSONL with text/query/anchor, or .txt) whose texts "
        "must never be generated; relative to the recipe",
    )

    @model_validator(mode="after")
    def _bounds(self) -> QueryFilters:
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) exceeds max_chars ({self.max_chars})")
        return self


class QualityJudgeConfig(StrictModel):
    """An LLM reads each generated query with its document and answers keep or drop (one request each).
    It fails closed: a query whose answer fails or does not parse is dropped (``quality_judge``)."""

    prompt: str = Field("query_quality", description="prompt name; its schema must have a 'keep' boolean")
    max_tokens: int = Field(64, gt=0, description="cap on the answer's tokens")
    temperature: float | None = Field(0.0, ge=0, description="null: the backend's default")
    max_doc_chars: int = Field(1200, gt=0, description="documents are cut to this many characters before prompting")


class SyntheticQueriesConfig(StrictModel):
    docs: int = Field(100, gt=0, description="corpus documents sampled (seeded) to write queries for")
    personas_per_doc: int = Field(1, gt=0, description="personas drawn per document (seeded)")
    query_types: list[QueryType] = Field(
        default_factory=lambda: list(QUERY_TYPES),
        min_length=1,
        description="query types to draw from: keyword, question, long-tail, opinion, short, long",
    )
    types_per_doc: int = Field(1, gt=0, description="query types drawn per (document, persona); one request each")
    prompt: str = Field("synthetic_query", description="prompt name (prompts/<name>.j2); its schema must have 'query'")
    max_tokens: int = Field(64, gt=0, description="cap on the answer's tokens")
    temperature: float | None = Field(None, ge=0, description="null: the backend's default")
    max_doc_chars: int = Field(1200, gt=0, description="documents are cut to this many characters before prompting")
    type_quotas: dict[QueryType, float] | None = Field(
        None,
        description="share of the queries per type (summing to 1), held exactly up to rounding: in the plan (seeded) "
        "and again over the kept queries, whose surplus types are dropped (seeded; filter 'quota'). Needs "
        "types_per_doc: 1; replaces query_types. null: types_per_doc types drawn per (document, persona)",
    )
    max_queries_per_doc: int | None = Field(
        None,
        gt=0,
        description="at most this many queries per source document (all its chunks together), so long documents "
        "do not dominate; the sample walks on to other documents to reach `docs`. null: no cap",
    )
    quality_judge: QualityJudgeConfig | None = Field(
        None, description="an LLM keep/drop verdict on each generated query (off by default; fails closed)"
    )
    filters: QueryFilters = Field(default_factory=QueryFilters)

    @model_validator(mode="after")
    def _types(self) -> SyntheticQueriesConfig:
        if len(set(self.query_types)) != len(self.query_types):
            raise ValueError("query_types: duplicate entries")
        if self.types_per_doc > len(self.query_types):
            raise ValueError(f"types_per_doc ({self.types_per_doc}) exceeds the {len(self.query_types)} query_types")
        if self.type_quotas is not None:
            shares = self.type_quotas
            if not shares or any(not 0 < v <= 1 for v in shares.values()):
                raise ValueError("type_quotas: expected shares in (0, 1], one per query type")
            if abs(sum(shares.values()) - 1) > 1e-6:
                raise ValueError(f"type_quotas: expected shares summing to 1, got {sum(shares.values()):g}")
            if self.types_per_doc != 1:
                raise ValueError("type_quotas: needs types_per_doc: 1 (each (document, persona) gets one query)")
        return self


class SyntheticNegativesConfig(StrictModel):
    per_pair: int = Field(3, gt=0, le=16, description="negative passages written per (query, positive), one request")
    pairs: Literal["synthetic", "real", "both"] = Field(
        "synthetic",
        description="which pairs get negatives: the synthetic queries, the source's labelled pairs, or both",
    )
    max_pairs: int | None = Field(None, gt=0, description="sample at most this many pairs (seeded); null: all")
    prompt: str = Field("synthetic_negative", description="prompt name; its schema must have a 'passages' array")
    max_tokens: int = Field(512, gt=0, description="cap on the answer's tokens (all passages together)")
    temperature: float | None = Field(None, ge=0, description="null: the backend's default")
    max_doc_chars: int = Field(1200, gt=0, description="the positive is cut to this many characters before prompting")
    min_chars: int = Field(40, ge=0, description="drop generated passages shorter than this")
    max_sim_to_positive: float | None = Field(
        0.98,
        gt=0,
        le=1,
        description="drop a generated passage whose embedding cosine to the positive is at least this "
        "(a near-copy of the positive is a false negative); null disables",
    )
