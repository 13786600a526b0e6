"""The training set and the cross-fitted model of the false-negative risk judge (``fn_risk``).

Replicates (nested hiding): every labelled query with m >= 2 positives is split into min(m, ``groups``)
groups of positives by a seeded permutation, and each group is hidden once while the others stay known.
Every labelled positive is thus a hidden example exactly once, and the known positives of a replicate
are nearly all of them (m - 1 of m for m <= ``groups``), as when the judge scores a real candidate with
every labelled positive known. A replicate's candidates are its query's dense ranking minus the known
positives, hardest first: the first ``depth`` are training rows (label 1 = a hidden positive), and the
first ``replay_depth`` are the held-out replay the cut-off is chosen on (``synth.judge.operating_point``).

Cross-fitting: replicates follow their query's fold (a seeded hash of its normalised text); a query's
rows are scored only by the model trained on the other folds. The learner is scikit-learn's
``LogisticRegression`` on standardised features, fitted by log-loss, so its output is a probability
(the report holds its held-out calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from synth.core.seeding import stable_key, uniforms
from synth.judge.operating_point import Replay
from synth.judge.risk_features import FEATURES, FeatureBuilder

MAX_TRAIN_ROWS = 1_000_000  # training rows at most (whole queries in a seeded order; ~5 ms per replicate)
MAX_REPLAY_ROWS = 2_000_000  # feature rows the replay holds at most (about 100 MB): a seeded subset beyond


@dataclass
class TrainingSet:
    X: list[np.ndarray] = field(default_factory=list)  # per replicate: feature rows down its ranking
    hidden: list[np.ndarray] = field(default_factory=list)  # per replicate: is the row a hidden positive
    rank: list[np.ndarray] = field(default_factory=list)  # per replicate: raw 1-based dense rank
    query: list[int] = field(default_factory=list)  # per replicate: its query row
    in_replay: list[bool] = field(default_factory=list)  # per replicate: scored down to the replay depth

    def __len__(self) -> int:
        return len(self.query)

    def rows(self, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(X, y, replicate index) of the training rows: each replicate's first ``depth``."""
        X = [x[:depth] for x in self.X]
        y = [h[:depth] for h in self.hidden]
        idx = [np.full(len(h), i, np.int64) for i, h in enumerate(y)]
        if not X:
            return np.zeros((0, len(FEATURES))), np.zeros(0, bool), np.zeros(0, np.int64)
        return np.concatenate(X), np.concatenate(y), np.concatenate(idx)


def hide_groups(seed: int, query_id: str, positives: list[int], groups: int) -> list[list[int]]:
    """The positives of one query in min(m, ``groups``) seeded groups (a pure function of seed, id, list)."""
    u = uniforms(seed, np.asarray([stable_key(query_id)], np.uint64), "fn-risk-hide", len(positives))[0]
    order = np.argsort(u, kind="stable")
    return [[positives[j] for j in part.tolist()] for part in np.array_split(order, min(len(positives), groups))]


def build_training_set(
    builder: FeatureBuilder,
    queries: dict[int, list[int]],
    query_ids: list[str],
    seed: int,
    groups: int,
    replay_depth: int,
) -> TrainingSet:
    """Replicates of the multi-positive ``queries`` (query row -> positive rows): whole queries in a seeded
    order while their training rows fit ``MAX_TRAIN_ROWS``; features down to the replay depth for those
    whose rows also fit ``MAX_REPLAY_ROWS`` (the training depth for the rest)."""
    depth = builder.depth
    replay_depth = max(replay_depth, depth)
    chosen = {q: rows for q, rows in queries.items() if len(rows) >= 2}
    order = sorted(chosen, key=lambda q: stable_key(str(seed), "fn-risk-replay", query_ids[q]))
    train_budget, replay_budget, taken, replayed = MAX_TRAIN_ROWS, MAX_REPLAY_ROWS, [], set()
    for q in order:  # whole queries, in a seeded order, while the budgets last
        replicates = min(len(chosen[q]), groups)
        if replicates * depth > train_budget:
            break
        train_budget -= replicates * depth
        taken.append(q)
        if replicates * replay_depth <= replay_budget:
            replay_budget -= replicates * replay_depth
            replayed.add(q)
    order = taken
    out = TrainingSet()
    longest = max((len(r) for r in chosen.values()), default=0)
    for start in range(0, len(order), 256):  # views in blocks: one search call each, bounded memory
        block = sorted(order[start : start + 256])
        views = builder.views(block, extra=replay_depth - depth + longest)
        for qr in block:
            pos, view = chosen[qr], views[qr]
            top = view.top_rows.tolist()
            for hidden in hide_groups(seed, query_ids[qr], pos, groups):
                known = [r for r in pos if r not in hidden]
                excluded = set(known)
                keep = [(i, r) for i, r in enumerate(top) if r not in excluded]
                keep = keep[: replay_depth if qr in replayed else depth]
                if not keep:
                    continue
                rows = np.asarray([r for _, r in keep], np.int64)
                cand = builder.corpus_passages(view, rows)
                positives = builder.corpus_passages(view, np.asarray(known, np.int64))
                out.X.append(builder.matrix(view, cand, positives).astype(np.float32))
                out.hidden.append(np.isin(rows, hidden))
                out.rank.append(np.asarray([i + 1 for i, _ in keep], np.int64))
                out.query.append(qr)
                out.in_replay.append(qr in replayed)
    return out


def new_model(C: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))


def cross_fit(
    ts: TrainingSet, fold_of_query: dict[int, int], folds: int, C: float, depth: int
) -> tuple[dict, str | None]:
    """Per fold, a model trained on the other folds' training rows (each replicate's first ``depth``);
    (models, problem or None)."""
    X, y, rep = ts.rows(depth)
    fold = np.asarray([fold_of_query[ts.query[i]] for i in rep.tolist()], np.int64)
    models: dict[int, object] = {}
    for f in range(folds):
        fit_rows = fold != f
        if y[fit_rows].sum() < 2 or (~y[fit_rows]).sum() < 2:
            return {}, (
                f"fold {f}: {int(y[fit_rows].sum())} hidden positives to learn from; the source has too few "
                f"labelled positives for {folds} folds"
            )
        models[f] = new_model(C).fit(X[fit_rows], y[fit_rows])
    return models, None


def held_out(ts: TrainingSet, models: dict, fold_of_query: dict[int, int], depth: int) -> tuple[Replay, dict]:
    """The replay (every replicate scored by its fold's model, down to what it holds) and the held-out
    quality of the risk on the training rows (AUC, calibration)."""
    risk = [models[fold_of_query[q]].predict_proba(x)[:, 1] if len(x) else np.zeros(0) for q, x in zip(ts.query, ts.X)]
    keep = [i for i, r in enumerate(ts.in_replay) if r]
    replay = Replay.of(
        [risk[i] for i in keep], [ts.hidden[i] for i in keep], [ts.rank[i] for i in keep], [ts.query[i] for i in keep]
    )
    oof = np.concatenate([r[:depth] for r in risk]) if risk else np.zeros(0)
    y = np.concatenate([h[:depth] for h in ts.hidden]) if risk else np.zeros(0, bool)
    return replay, heldout_quality(oof, y)


def heldout_quality(oof: np.ndarray, y: np.ndarray) -> dict:
    """Cross-fitted AUC of the risk on the hidden positives, and its calibration (10 equal-count bins)."""
    from sklearn.metrics import roc_auc_score

    out: dict = {
        "candidates": int(len(y)),
        "hidden_positives": int(y.sum()),
        "auc": float(roc_auc_score(y, oof)) if 0 < y.sum() < len(y) else None,
    }
    if len(oof):
        bins = np.array_split(np.argsort(oof, kind="stable"), min(10, len(oof)))
        rows = [(float(oof[b].mean()), float(y[b].mean()), len(b)) for b in bins if len(b)]
        out["calibration"] = [{"predicted": round(a, 5), "observed": round(o, 5), "candidates": c} for a, o, c in rows]
        out["ece"] = float(sum(c * abs(a - o) for a, o, c in rows) / len(oof))
    return out


def coefficients(models: dict) -> dict[str, float]:
    """Mean standardised coefficient per feature over the fold models (sign: + = more likely relevant)."""
    coefs = np.mean([m[-1].coef_[0] for m in models.values()], axis=0)
    return {n: round(float(c), 4) for n, c in zip(FEATURES, coefs)}
