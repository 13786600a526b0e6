"""The cut-off of the learned false-negative judge (``synth.judge.operating_point``) on crafted replays
where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from synth.judge.operating_point import (
    MIN_EXPECTED,
    Replay,
    choose_cutoff,
    describe,
    oracle_mean_rank,
    supported_target,
)


def crafted_replay(replicates: int = 300, width: int = 200, seed: int = 0, planted: int = 0) -> Replay:
    """Each replicate's ranking holds 2 hidden positives among its first 20 ranks, with high risk
    (0.4-1.0); the other candidates' risk is 0-0.6, so a good cut-off exists between. ``planted``
    replicates also hide a positive at rank 1 with the lowest risk of all: the few candidates that
    the lowest cut-offs keep are then all hidden positives."""
    rng = np.random.default_rng(seed)
    risk, hidden, rank, query = [], [], [], []
    for i in range(replicates):
        y = np.zeros(width, bool)
        y[rng.choice(20, size=2, replace=False)] = True
        r = np.where(y, rng.uniform(0.4, 1.0, width), rng.uniform(0.0, 0.6, width))
        if i < planted:
            y[0], r[0] = True, 1e-9 * (i + 1)
        risk.append(r)
        hidden.append(y)
        rank.append(np.arange(1, width + 1))
        query.append(i // 2)  # two replicates per query
    return Replay.of(risk, hidden, rank, query)


def first_crossing(replay: Replay, n: int, target_rate: float) -> float:
    """The old rule, for contrast: scan cut-offs upwards and stop at the first whose raw rate exceeds the target."""
    finite = replay.risk[np.isfinite(replay.risk)]
    best = 0.0
    for t in np.unique(np.quantile(finite, np.linspace(0, 1, 1001))):
        k = replay.kept(float(t), n)
        if k.sum() and (k & replay.hidden).sum() / k.sum() > target_rate:
            break
        best = float(t)
    return best


def test_hidden_positives_at_the_lowest_risks_of_a_few_queries_do_not_drive_the_cut_off_to_zero():
    clean = crafted_replay()
    planted = crafted_replay(planted=4)
    n, target = 5, 0.2
    t_clean, est_clean = choose_cutoff(clean, n, target)
    t_planted, est_planted = choose_cutoff(planted, n, target)
    base = est_planted["topn_fn_rate"]
    # a first-crossing scan stops at the planted risks: nearly every candidate would be flagged
    assert first_crossing(planted, n, target * base) < 1e-6
    # the smoothed choice moves by a hair: four replicates among 300 cannot carry the cut-off away
    assert t_planted > 0.3 and abs(t_planted - t_clean) < 0.05
    assert est_planted["reachable"] and est_planted["fn_ratio"] <= target + 1e-9
    assert est_planted["replicates_short"] == 0 and est_planted["flagged_share"] < 0.5
    lo, hi = est_planted["fn_ratio_interval"]
    assert lo <= est_planted["fn_ratio"] <= hi


def test_the_cut_off_is_the_highest_within_the_target_and_the_estimate_is_what_selection_does():
    replay = crafted_replay(seed=1)
    n = 5
    for target in (0.05, 0.2, 0.5):
        t, est = choose_cutoff(replay, n, target)
        again = describe(replay, t, n)
        assert est["kept"] == again["kept"] == n * len(replay)  # rankings are deep enough: nobody is short
        assert est["fn_rate"] == pytest.approx(again["fn_rate"])
        assert est["fn_rate_smoothed"] <= target * est["topn_fn_rate"] + 1e-12
    loose, strict = choose_cutoff(replay, n, 0.5)[0], choose_cutoff(replay, n, 0.05)[0]
    assert strict < loose  # a stricter target flags more
    t, est = choose_cutoff(replay, n, 1.0)
    assert t > 1.0 and est["fn_ratio"] == pytest.approx(1.0)  # 1x: the plain top-n, nothing flagged


def test_too_little_support_loosens_the_target_or_gives_up():
    replay = crafted_replay(replicates=12)  # 12 replicates x 2 hidden positives among the first 20 ranks
    hidden_top = int(replay.hidden[:, :5].sum())
    assert MIN_EXPECTED <= hidden_top < MIN_EXPECTED / 0.1
    target, why = supported_target(replay, 5, 0.1)
    assert target == pytest.approx(MIN_EXPECTED / hidden_top) and "the least this source supports" in why
    assert supported_target(replay, 5, 1.0) == (1.0, "")  # 1x rests on every hidden positive of the top-n
    tiny = crafted_replay(replicates=1)
    target, why = supported_target(tiny, 1, 0.1)
    assert target is None and "a ratio needs" in why


def test_oracle_rank_equals_a_brute_force_count():
    rng = np.random.default_rng(3)
    replay = crafted_replay(replicates=40, width=60, seed=3)
    replay.rank[:] = np.sort(rng.choice(500, size=(40, 60)), axis=1) + 1  # gaps: ranks skip known positives
    for n in (1, 3, 5):
        expected = []
        for y, k in zip(replay.hidden, replay.rank):
            expected += [int(r) for r, h in zip(k, y) if not h][:n]
        assert oracle_mean_rank(replay, n) == pytest.approx(np.mean(expected))
