"""Does a training set train a better retriever? Fine-tune, then score on a BEIR split.

``train_and_evaluate`` fine-tunes the bundled all-MiniLM-L6-v2 with ``SentenceTransformerTrainer`` and
``MultipleNegativesRankingLoss`` on a saved dataset (pairs, triplets or n-tuples: the loss takes every
column after the positive as a hard negative, and the rest of the batch as in-batch negatives), then
``evaluate_model`` encodes the BEIR corpus and the split's queries, ranks the whole corpus by exact
cosine similarity and scores the ranking with pytrec_eval: nDCG@10, MRR@10 and Recall@100, the
figures of MEASURING.md. Everything is seeded (trainer seed, data order, dropout) and runs on CPU.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from synth.embed import BUNDLED_MODEL, resolve_model_path
from synth.core.errors import UserError, is_out_of_memory
from synth.core.files import default_cache_dir
from synth.formats.rows import PROVENANCE_COLUMNS
from synth.formats.st import TRAINING_CONFIG
from synth.index import exact_search
from synth.core.records import Qrels, SourceData

log = logging.getLogger("synth.evaluate")

DEPTH = 100  # documents retrieved per query; Recall@100 needs them all
METRICS = ("ndcg@10", "mrr@10", "recall@100")


# --- the training rows ------------------------------------------------------------------------------


def dataset_folder(path: str | Path) -> Path:
    """A run folder (``DIR/dataset`` inside) or a ``save_to_disk`` folder itself."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such dataset folder (expected a synth run folder or a saved dataset)")
    if (path / "dataset").is_dir():
        return path / "dataset"
    if any((path / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        return path
    raise UserError(f"{path}: expected a synth run folder (with dataset/) or a datasets.save_to_disk folder")


def load_training_rows(path: str | Path):
    """The rows to train on: ``["triplets"]`` of a DatasetDict (its provenance, in ``triplets_provenance``,
    is not needed), or a plain Dataset; text columns only."""
    import datasets

    folder = dataset_folder(path)
    try:
        loaded = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{folder}: not a saved dataset ({str(e).splitlines()[0][:120]})") from None
    except IndexError:  # datasets saves an empty dataset with no shard, then cannot load it
        raise UserError(f"{folder}: the dataset has no rows (no data files)") from None
    if isinstance(loaded, datasets.DatasetDict):
        if TRAINING_CONFIG not in loaded:
            raise UserError(
                f"{folder}: expected a {TRAINING_CONFIG!r} config with the training rows, got {sorted(loaded)}"
            )
        loaded = loaded[TRAINING_CONFIG]
    if len(loaded) == 0:
        raise UserError(f"{folder}: the dataset has no rows")
    if "label" in loaded.column_names:
        raise UserError(
            f"{folder}: labeled-pair rows (with a 'label' column) cannot train with "
            "MultipleNegativesRankingLoss; use the n-tuple, triplet or pairs format"
        )
    # A run's triplets config holds only text columns; older runs and foreign datasets may carry ids too.
    text = [
        c
        for c in loaded.column_names
        if c not in PROVENANCE_COLUMNS and getattr(loaded.features[c], "dtype", None) in ("string", "large_string")
    ]
    if len(text) < 2:
        raise UserError(f"{folder}: expected at least two text columns (anchor, positive, ...), got {text}")
    return loaded.select_columns(text)


# --- scoring ----------------------------------------------------------------------------------------


def _ranked(scores: dict[str, float]) -> list[tuple[str, float]]:
    # trec_eval's order: score descending, ties by document id descending.
    return sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def score_run(qrels: Qrels, run: dict[str, dict[str, float]]) -> dict:
    """Mean nDCG@10, MRR@10 (reciprocal rank within the first 10) and Recall@100 over the queries of
    ``qrels``, computed by pytrec_eval. A query missing from ``run`` scores 0."""
    import pytrec_eval

    qrels = {q: {d: int(g) for d, g in docs.items()} for q, docs in qrels.items()}
    run = {q: {d: float(s) for d, s in run.get(q, {}).items()} for q in qrels}
    top10 = {q: dict(_ranked(docs)[:10]) for q, docs in run.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"}).evaluate(run)
    cut = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    n = len(qrels)

    def mean(table: dict, key: str) -> float:
        return float(sum(table.get(q, {}).get(key, 0.0) for q in qrels) / n) if n else 0.0

    return {
        "ndcg@10": mean(full, "ndcg_cut_10"),
        "mrr@10": mean(cut, "recip_rank"),
        "recall@100": mean(full, "recall_100"),
        "queries": n,
        # per query, for paired comparisons (synth.evaluate.compare_table.paired_bootstrap)
        "per_query": {
            metric: {q: round(float(full.get(q, {}).get(key, 0.0)), 6) for q in qrels}
            for metric, key in (("ndcg@10", "ndcg_cut_10"), ("recall@100", "recall_100"))
        },
    }


def load_eval_data(beir: str | Path, split: str = "test") -> SourceData:
    """The BEIR folder's corpus and the queries that have a positive in ``qrels/<split>.tsv``."""
    from synth.formats.beir import BeirSource, load_beir

    return load_beir(BeirSource(path=str(beir), split=split))


def evaluate_model(
    model, beir: str | Path, split: str = "test", *, batch_size: int = 64, data: SourceData | None = None, encode=None
) -> dict:
    """Encode the corpus and the split's queries with ``model`` (a SentenceTransformer), rank by
    exact cosine similarity, and score: ``{"ndcg@10", "mrr@10", "recall@100", "queries", "corpus",
    "seconds"}``. ``data`` skips reloading the BEIR folder; ``encode(texts, label)`` replaces
    ``model.encode`` (the untrained model reads synth's embedding cache through it)."""
    t0 = time.perf_counter()
    data = data if data is not None else load_eval_data(beir, split)

    def encode_with_model(texts: list[str], label: str) -> np.ndarray:
        return model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )

    encode = encode or encode_with_model
    corpus_emb = np.ascontiguousarray(encode(data.corpus.texts, "corpus"), dtype=np.float32)
    query_emb = np.ascontiguousarray(encode(data.queries.texts, "queries"), dtype=np.float32)
    rows, scores = exact_search(query_emb, corpus_emb, DEPTH)
    ids = data.corpus.ids
    run = {
        qid: {ids[r]: float(s) for r, s in zip(rows[i].tolist(), scores[i].tolist())}
        for i, qid in enumerate(data.queries.ids)
    }
    metrics = score_run(data.qrels, run)
    metrics.update(corpus=len(data.corpus), seconds=round(time.perf_counter() - t0, 3))
    return metrics


def load_model(base_model: str = BUNDLED_MODEL, max_seq_length: int = 256):
    from sentence_transformers import SentenceTransformer

    from synth.core.models import check_max_length

    check_max_length(resolve_model_path(base_model), max_seq_length, "--max-seq-length")  # before, not in, training
    try:
        model = SentenceTransformer(resolve_model_path(base_model), device="cpu")
    except OSError as e:
        if is_out_of_memory(e):  # not a missing model: the CLI's classifier says out of memory
            raise
        raise UserError(f"base model: cannot load {base_model!r} offline: {str(e).splitlines()[0]}") from None
    model.max_seq_length = max_seq_length
    return model


def evaluate_base(
    beir: str | Path,
    split: str = "test",
    *,
    base_model: str = BUNDLED_MODEL,
    max_seq_length: int = 256,
    cache_dir: str | Path | None = None,
) -> dict:
    """The untrained reference: the base model scored as it is. Its embeddings go through synth's
    cache (``cache_dir``, default $SYNTH_CACHE_DIR or ~/.cache/synth), shared with mining runs that
    embed the same corpus with the same model and max_seq_length."""
    from synth.embed import Encoder, embed_texts

    cache_dir = Path(os.path.expanduser(cache_dir)) if cache_dir else default_cache_dir()
    encoder = Encoder(base_model, max_seq_length, 64, True, "cpu")
    metrics = evaluate_model(
        None, beir, split, encode=lambda texts, label: embed_texts(encoder, texts, "", cache_dir, 4096, label)
    )
    return {
        "metrics": _metrics_only(metrics),
        "eval": metrics,
        "base_model": base_model,
        "max_seq_length": max_seq_length,
        "seconds": {"train": 0.0, "eval": metrics["seconds"]},
    }


def _metrics_only(metrics: dict) -> dict:
    return {k: metrics[k] for k in METRICS}


def per_query(cell: dict, metric: str = "ndcg@10") -> dict[str, float] | None:
    """A cell's per-query values of ``metric`` (None for cells scored before they were kept)."""
    return ((cell.get("eval") or {}).get("per_query") or {}).get(metric)


# --- fine-tuning ------------------------------------------------------------------------------------


def _planned_steps(rows: int, batch_size: int, epochs: float, max_steps: int | None) -> int:
    """The optimiser steps a training run will take (the trainer's own count, up to its duplicate-free batching)."""
    return int(max_steps) if max_steps else math.ceil(math.ceil(rows / batch_size) * epochs)


def train_and_evaluate(
    dataset_dir: str | Path,
    beir: str | Path,
    *,
    split: str = "test",
    seed: int = 0,
    base_model: str = BUNDLED_MODEL,
    max_steps: int | None = None,
    epochs: float = 1,
    batch_size: int = 32,
    lr: float = 2e-5,
    max_seq_length: int = 256,
    work_dir: str | Path | None = None,
    model_out: str | Path | None = None,
) -> dict:
    """Fine-tune ``base_model`` on the rows of ``dataset_dir`` with MNRL, then ``evaluate_model``.

    ``max_steps`` (when set) overrides ``epochs``. ``work_dir``: where the trainer may write (a
    temporary folder by default, removed afterwards; no checkpoints are saved). ``model_out``: save the
    fine-tuned model there. Returns metrics, timings and training stats (steps, rows, seed, loss)."""
    _check_training_settings(max_steps, epochs, batch_size, lr)
    data = load_eval_data(beir, split)  # fail on a bad BEIR folder before spending time on training
    rows = load_training_rows(dataset_dir)
    model = load_model(base_model, max_seq_length)
    result, train_seconds = _train_mnrl(
        model, rows, work_dir, seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr
    )
    if model_out is not None:
        model.save(str(model_out))
    metrics = evaluate_model(model, beir, split, data=data)
    steps = int(result.global_step)
    return {
        "metrics": _metrics_only(metrics),
        "eval": metrics,
        "training": {
            "rows": len(rows),
            "columns": rows.column_names,
            "steps": steps,
            "seed": seed,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "lr": lr,
            "max_seq_length": max_seq_length,
            "base_model": base_model,
            "loss": float(result.training_loss),
            "loss_fn": "MultipleNegativesRankingLoss",
            "batch_sampler": "no_duplicates",
        },
        "seconds": {
            "train": round(train_seconds, 3),
            "per_step": round(train_seconds / max(1, steps), 3),
            "eval": metrics["seconds"],
        },
        "dataset": str(dataset_folder(dataset_dir)),
        "beir": str(beir),
        "split": split,
    }


def _check_training_settings(max_steps: int | None, epochs: float, batch_size: int, lr: float) -> None:
    """Refuse a step count, epoch count, batch size or learning rate that is not positive, before loading."""
    if max_steps is not None and max_steps <= 0:
        raise UserError(f"--max-steps: expected a positive number of steps, got {max_steps}")
    if epochs <= 0 or batch_size <= 0 or lr <= 0:
        raise UserError(f"epochs, batch size and learning rate must be positive (got {epochs}, {batch_size}, {lr})")


def _train_mnrl(
    model,
    rows,
    work_dir: str | Path | None,
    *,
    seed: int,
    epochs: float,
    max_steps: int | None,
    batch_size: int,
    lr: float,
):
    """Train ``model`` in place on ``rows`` with MNRL in a scratch folder under ``work_dir`` (removed afterwards);
    returns (the trainer's ``TrainOutput``, training seconds)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.losses import MultipleNegativesRankingLoss
    from sentence_transformers.training_args import BatchSamplers
    from transformers.trainer_callback import PrinterCallback

    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="synth-train-", dir=work_dir))
    t0 = time.perf_counter()
    try:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(scratch),
            num_train_epochs=float(epochs),
            max_steps=max_steps or -1,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            # 10 % linear warmup (a float below 1 is a ratio), but none under 10 steps: the warmup's first step
            # has learning rate 0, so a 1-step run would not train at all and a 4-step one would lose a quarter
            warmup_steps=0.1 if _planned_steps(len(rows), batch_size, epochs, max_steps) >= 10 else 0,
            seed=seed,
            data_seed=seed,
            use_cpu=True,
            save_strategy="no",
            report_to="none",
            logging_strategy="no",
            disable_tqdm=True,
            # In-batch negatives must not be copies of a row's anchor or positive (triplet rows repeat them).
            batch_sampler=BatchSamplers.NO_DUPLICATES,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=rows, loss=MultipleNegativesRankingLoss(model)
        )
        # with tqdm off the trainer adds a callback that print()s its final metrics dict to stdout, which
        # carries only the command's result line; the result JSON records the training numbers instead
        trainer.remove_callback(PrinterCallback)
        result = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return result, time.perf_counter() - t0
