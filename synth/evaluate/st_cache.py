"""Run sentence-transformers' ``mine_hard_negatives`` on synth's own embeddings.

``mine_hard_negatives(cache_folder=...)`` loads ``query_embeddings_<sha256>.npy`` and
``corpus_embeddings_<sha256>.npy``, hashed over repr((model name, prompt, prompt name, texts)) of
its *deduplicated* text lists. Writing synth's vectors under those names makes both tools mine the
very same embeddings, so comparisons (tests/integration/test_topk_vs_sentence_transformers.py,
benchmarks/p1) measure mining, not encoding.
The files are checked against the vectors on every call and rewritten atomically when they differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from synth.core.files import atomic_file, warn_damaged


def st_cache_files(
    model,
    queries: list[str],
    corpus: list[str],
    cache_folder: Path,
    query_prompt=None,
    query_prompt_name=None,
    corpus_prompt=None,
    corpus_prompt_name=None,
):
    name = model.model_card_data.base_model or ""
    qh = hashlib.sha256(repr((name, query_prompt, query_prompt_name, queries)).encode()).hexdigest()
    ch = hashlib.sha256(repr((name, corpus_prompt, corpus_prompt_name, corpus)).encode()).hexdigest()
    return Path(cache_folder) / f"query_embeddings_{qh}.npy", Path(cache_folder) / f"corpus_embeddings_{ch}.npy"


def st_prepopulate(
    model,
    query_texts: list[str],
    query_emb,
    corpus_texts: list[str],
    corpus_emb,
    positive_texts: list[str],
    cache_folder: Path,
) -> Path:
    """``query_texts`` / ``positive_texts``: the dataset's columns in row order (``query_emb`` row i
    belongs to ``query_texts[i]``); ``corpus_texts``: the corpus passed as ``corpus=``."""
    cache_folder = Path(cache_folder)
    cache_folder.mkdir(parents=True, exist_ok=True)
    corpus_rows: dict[str, int] = {}
    for row, t in enumerate(corpus_texts):
        corpus_rows.setdefault(t, row)
    st_corpus = list(dict.fromkeys(list(corpus_texts) + list(positive_texts)))
    missing = [t for t in st_corpus if t not in corpus_rows]
    if missing:
        raise ValueError(f"{len(missing)} positives are not in the corpus; cannot pre-populate")
    query_row: dict[str, int] = {}
    for row, t in enumerate(query_texts):
        query_row.setdefault(t, row)
    st_queries = list(query_row)
    qf, cf = st_cache_files(model, st_queries, st_corpus, cache_folder)
    _put(qf, np.asarray(query_emb, np.float32)[[query_row[t] for t in st_queries]])
    take = np.asarray([corpus_rows[t] for t in st_corpus], np.int64)
    same = len(take) == len(corpus_emb) and np.array_equal(take, np.arange(len(take)))
    _put(cf, np.asarray(corpus_emb, np.float32) if same else np.asarray(corpus_emb, np.float32)[take])
    return cache_folder


def _put(path: Path, array: np.ndarray) -> None:
    """sentence-transformers reads these files with a bare ``np.load``, so they stay plain ``.npy``
    (no checking footer): one already there is checked against the array itself, and rewritten
    atomically when it differs (truncated, stale or foreign)."""
    if path.exists():
        try:
            if np.array_equal(np.load(path, mmap_mode="r"), array):
                return
            problem = "different contents"
        except Exception as e:  # whatever fails reading it, the cure is to write it again
            problem = e
        warn_damaged(path, problem, "writing it again")
    with atomic_file(path) as f:
        np.save(f, array)
