"""The cut-off of a learned false-negative judge, chosen by replaying the run's selection on held-out folds.

A *replay* is what the judge knows about its own training queries: for each replicate (a query with one
group of its labelled positives hidden), the candidates down the query's dense ranking as the run's
selection walks them (the pool, then backfill, to the run's backfill depth), their cross-fitted risk,
which of them are hidden positives, and their raw rank. Selection at cut-off t keeps, per replicate, the
first n candidates with risk < t.

The target is a ratio, not a rate: the kept negatives may hold at most ``target`` times the hidden
positives the plain top-n holds. A ratio means the same on every collection: the hidden positives are a
random sample of the relevant documents, so the share of them that survives selection estimates the share
of *all* relevant documents that survives it, whatever share of them is labelled, while a rate depends on
how many positives a collection labels per query (and the replay hides only some of those).

Statistics, so that a handful of candidates never decides the cut-off:
- every cut-off is judged on the full selection (n kept per replicate, backfill included): its estimate
  rests on about n x replicates kept candidates, never on the few kept at the lowest cut-offs;
- the false-negative rate as a function of the cut-off is smoothed by isotonic regression (weights: the
  candidates kept), so one noisy cut-off neither stops nor extends the choice; the cut-off is the highest
  whose smoothed rate is within the target;
- support is checked first: the replay must expect at least ``MIN_EXPECTED`` false negatives at the
  target (hidden positives in the unjudged top-n x target); with fewer, the target is loosened to the
  least the replay supports, and the caller says so (with fewer than ``MIN_EXPECTED`` hidden positives
  in the top-n at all, it falls back);
- the estimate comes with a 90 % interval from a bootstrap over queries (replicates of one query move
  together), and with its hardness: the kept candidates' mean rank beside the oracle's (the first n
  candidates that are not labelled positives), so it reads "FN 0.1x top-n at 2.5x the hardness limit".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_EXPECTED = 5  # the classic floor for a count-based estimate (expected count >= 5)
GRID = 256  # candidate cut-offs: quantiles of the risks near the top of the rankings
BOOTSTRAP = 200


@dataclass
class Replay:
    """Replicates padded to one width: risk ``inf`` past a replicate's ranking (never kept)."""

    risk: np.ndarray  # float64 [R, W]
    hidden: np.ndarray  # bool [R, W]
    rank: np.ndarray  # int64 [R, W] raw 1-based dense rank (0 = padding)
    query: np.ndarray  # int64 [R]: the replicate's query (bootstrap cluster)

    @classmethod
    def of(cls, risk: list[np.ndarray], hidden: list[np.ndarray], rank: list[np.ndarray], query) -> "Replay":
        width = max((len(r) for r in risk), default=0)
        R = np.full((len(risk), width), np.inf)
        Y = np.zeros((len(risk), width), bool)
        K = np.zeros((len(risk), width), np.int64)
        for i, (r, y, k) in enumerate(zip(risk, hidden, rank)):
            R[i, : len(r)], Y[i, : len(y)], K[i, : len(k)] = r, y, k
        return cls(R, Y, K, np.asarray(query, np.int64))

    def __len__(self) -> int:
        return len(self.query)

    def kept(self, t: float, n: int) -> np.ndarray:
        """[R, W] the candidates a selection at cut-off ``t`` keeps: the first n with risk < t."""
        allowed = self.risk < t
        return allowed & (np.cumsum(allowed, axis=1) <= n)


def top_n(replay: Replay, n: int) -> tuple[int, int]:
    """(hidden positives among the first n candidates of every replicate, candidates there)."""
    valid = replay.rank[:, :n] > 0
    return int((replay.hidden[:, :n] & valid).sum()), int(valid.sum())


def supported_target(replay: Replay, n: int, target: float) -> tuple[float | None, str]:
    """The target the replay can estimate: ``target`` itself when it expects at least ``MIN_EXPECTED``
    false negatives there (hidden positives in the unjudged top-n x target), else the least target it can
    (``MIN_EXPECTED`` / those hidden positives), or None when not even 1x is within reach. With one line
    saying what was loosened, or why nothing can be estimated."""
    hidden_top, _ = top_n(replay, n)
    if hidden_top * target >= MIN_EXPECTED:
        return target, ""
    if hidden_top < MIN_EXPECTED:
        return None, (
            f"the held-out replay has {hidden_top} hidden positives in the unjudged top-{n} (a ratio needs "
            f"{MIN_EXPECTED})"
        )
    least = MIN_EXPECTED / hidden_top
    return least, (
        f"the held-out replay has {hidden_top} hidden positives in the unjudged top-{n}: too few to estimate "
        f"{target:g}x (that needs {int(np.ceil(MIN_EXPECTED / target))}); the cut-off aims at {least:.2f}x, "
        "the least this source supports"
    )


def choose_cutoff(replay: Replay, n: int, target: float, seed: int = 0) -> tuple[float, dict]:
    """The highest cut-off whose smoothed false-negative rate of the kept candidates is within
    ``target`` x the top-n's, and the estimate there (see the module docstring)."""
    from sklearn.isotonic import IsotonicRegression

    hidden_top, slots_top = top_n(replay, n)
    base = hidden_top / max(slots_top, 1)
    near_top = replay.risk[:, : max(4 * n, 100)]
    finite = near_top[np.isfinite(near_top)]
    qs = np.quantile(finite, np.linspace(0.0, 1.0, GRID)) if len(finite) else np.zeros(0)
    grid = np.unique(
        np.concatenate([qs, [max(1.0, float(finite.max()) if len(finite) else 0.0) + 1e-9]])
    )  # top: flag none
    fn = np.zeros(len(grid))
    kept = np.zeros(len(grid))
    for i, t in enumerate(grid):
        k = replay.kept(float(t), n)
        fn[i], kept[i] = (k & replay.hidden).sum(), k.sum()
    rate = np.divide(fn, kept, out=np.zeros(len(grid)), where=kept > 0)
    smooth = IsotonicRegression(increasing=True).fit_transform(np.arange(len(grid)), rate, sample_weight=kept + 1e-9)
    within = np.flatnonzero(smooth <= target * base + 1e-12)
    reachable = len(within) > 0
    i = int(within[-1]) if reachable else 0
    t = float(grid[i])
    estimate = describe(replay, t, n, base)
    estimate.update(
        fn_rate_smoothed=float(smooth[i]),
        fn_ratio=float(smooth[i] / base) if base > 0 else None,
        fn_ratio_interval=_interval(replay, t, n, seed),
        reachable=reachable,
    )
    return t, estimate


def describe(replay: Replay, t: float, n: int, base: float | None = None) -> dict:
    """What selection at cut-off ``t`` does on the replay: kept, their false-negative rate and hardness."""
    if base is None:
        hidden_top, slots_top = top_n(replay, n)
        base = hidden_top / max(slots_top, 1)
    k = replay.kept(t, n)
    kept = int(k.sum())
    examined = _examined(replay, k, n)
    mean_rank = float(replay.rank[k].mean()) if kept else None
    oracle = oracle_mean_rank(replay, n)
    return {
        "cutoff": t,
        "replicates": len(replay),
        "queries": int(len(np.unique(replay.query))),
        "kept": kept,
        "fn_rate": float((k & replay.hidden).sum() / kept) if kept else 0.0,
        "topn_fn_rate": float(base),
        "mean_rank": mean_rank,
        "oracle_mean_rank": oracle,
        "rank_vs_oracle": mean_rank / oracle if mean_rank is not None and oracle else None,
        "flagged_share": float(1 - kept / examined) if examined else 0.0,
        "replicates_short": int((k.sum(axis=1) < n).sum()),
    }


def oracle_mean_rank(replay: Replay, n: int) -> float | None:
    """The hardness limit: mean raw rank of the first n candidates of each replicate that are not hidden
    positives (an oracle that knows every labelled positive skips exactly those)."""
    clean = ~replay.hidden & (replay.rank > 0)
    first = clean & (np.cumsum(clean, axis=1) <= n)
    return float(replay.rank[first].mean()) if first.any() else None


def _examined(replay: Replay, kept: np.ndarray, n: int) -> int:
    """Candidates a selection looks at: each replicate's ranking down to its n-th kept one (or its end)."""
    counts = np.cumsum(kept, axis=1)
    full = counts[:, -1] >= n if counts.shape[1] else np.zeros(len(kept), bool)
    last = np.where(full, np.argmax(counts >= n, axis=1) + 1, (replay.rank > 0).sum(axis=1))
    return int(last.sum())


def _interval(replay: Replay, t: float, n: int, seed: int) -> list[float] | None:
    """90 % bootstrap interval of the false-negative ratio at ``t``, resampling queries."""
    k = replay.kept(t, n)
    valid = replay.rank[:, :n] > 0
    per_rep = np.stack(
        [(k & replay.hidden).sum(1), k.sum(1), (replay.hidden[:, :n] & valid).sum(1), valid.sum(1)], 1
    ).astype(np.float64)
    _, inverse = np.unique(replay.query, return_inverse=True)
    per_query = np.zeros((inverse.max() + 1 if len(inverse) else 0, 4))
    np.add.at(per_query, inverse, per_rep)
    if len(per_query) < 2:
        return None
    rng = np.random.default_rng(seed)
    draws = per_query[rng.integers(0, len(per_query), size=(BOOTSTRAP, len(per_query)))].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (draws[:, 0] / draws[:, 1]) / (draws[:, 2] / draws[:, 3])
    ratio = ratio[np.isfinite(ratio)]
    return [float(np.quantile(ratio, 0.05)), float(np.quantile(ratio, 0.95))] if len(ratio) else None
