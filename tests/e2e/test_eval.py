"""synth eval / synth compare: fine-tune the bundled MiniLM on a real run's data, score a BEIR split.

examples/scifact-mini has only train qrels, so the evaluation set is a small BEIR folder cut from it
(the last 30 queries, their positives and other documents up to 120) with qrels/test.tsv; the
training budgets are a few steps at max_seq_length 32 to keep the file fast on 2 busy cores.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pytest

from synth.evaluate.compare import Entry, compare
from synth.evaluate.train_eval import evaluate_model, load_model, load_training_rows, score_run, train_and_evaluate
from tests.conftest import EXAMPLE, REPO
from tests.support.subsets import cut_beir

TINY = {"max_steps": 4, "batch_size": 8, "max_seq_length": 32}
RUN_SET = ["mine.n_negatives=1"]


def small_beir(src: Path, dst: Path, n_queries: int = 30, n_docs: int = 120) -> Path:
    """An evaluation set: ``n_queries`` of the example's queries with their positives, as a test split."""
    return cut_beir(src, dst, n_queries, n_docs, split="test")


@pytest.fixture(scope="module")
def eval_beir(tmp_path_factory) -> Path:
    return small_beir(EXAMPLE, tmp_path_factory.mktemp("beir") / "scifact-mini-test")


@pytest.fixture(scope="module")
def run_dir(synth_cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "resa2-run"
    synth_cli(
        "run",
        str(REPO / "recipes" / "resa2.yaml"),
        "--out",
        str(out),
        *[a for s in RUN_SET for a in ("--set", s)],
        check=True,
    )
    return out


def in_unit_interval(metrics: dict) -> bool:
    return all(0.0 <= metrics[k] <= 1.0 for k in ("ndcg@10", "mrr@10", "recall@100"))


def test_score_run_agrees_with_hand_computation():
    qrels = {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d9": 1}}
    run = {
        "q1": {"d4": 0.9, "d1": 0.8, "d5": 0.7, "d2": 0.6},
        "q2": {f"x{i}": 1.0 - i / 100 for i in range(11)} | {"d3": 0.5},
    }  # d3 at rank 12; q3 retrieves nothing
    got = score_run(qrels, run)
    # trec_eval's nDCG: linear gains (the grade), log2(rank + 1) discount, ideal = grades sorted.
    dcg_q1 = 2 / math.log2(3) + 1 / math.log2(5)
    idcg_q1 = 2 / math.log2(2) + 1 / math.log2(3)
    assert got["ndcg@10"] == pytest.approx((dcg_q1 / idcg_q1 + 0 + 0) / 3, abs=1e-6)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 0 + 0) / 3, abs=1e-9)  # rank 12 is past the cut
    assert got["recall@100"] == pytest.approx((1 + 1 + 0) / 3, abs=1e-9)
    assert got["queries"] == 3
    # per query, for the paired bootstrap of either metric
    assert got["per_query"]["recall@100"] == {"q1": 1.0, "q2": 1.0, "q3": 0.0}
    assert got["per_query"]["ndcg@10"]["q1"] == pytest.approx(dcg_q1 / idcg_q1, abs=1e-6)


def test_training_is_seeded_changes_the_model_and_scores_in_range(run_dir, eval_beir, tmp_path, synth_cli):
    rows = load_training_rows(run_dir)
    assert rows.column_names == ["anchor", "positive", "negative_1"]
    a = train_and_evaluate(run_dir, eval_beir, seed=0, model_out=tmp_path / "model", **TINY)
    assert a["training"]["steps"] == TINY["max_steps"] and a["training"]["rows"] == len(rows)
    assert a["training"]["seed"] == 0 and np.isfinite(a["training"]["loss"])
    assert in_unit_interval(a["metrics"]) and a["eval"]["queries"] == 30

    # Same seed in another process, through the CLI: the very same numbers.
    out = tmp_path / "eval.json"
    proc = synth_cli(
        "eval",
        str(run_dir),
        "--beir",
        str(eval_beir),
        "--seed",
        "0",
        "--max-steps",
        "4",
        "--batch-size",
        "8",
        "--max-seq-length",
        "32",
        "--out",
        str(out),
        check=True,
    )
    assert "nDCG@10" in proc.stdout
    assert json.loads(out.read_text())["metrics"] == a["metrics"]

    base = load_model(max_seq_length=TINY["max_seq_length"])
    base_metrics = evaluate_model(base, eval_beir)
    assert in_unit_interval(base_metrics)
    from sentence_transformers import SentenceTransformer

    trained = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    texts = rows["anchor"][:16] + rows["positive"][:16]
    moved = np.abs(trained.encode(texts) - base.encode(texts)).max()
    assert moved > 1e-3, "four MNRL steps left the embeddings unchanged"


def test_a_one_step_budget_still_trains(run_dir, eval_beir, tmp_path):
    """No warmup under 10 steps: a linear warmup's first step has learning rate 0, so one step (a zero-label
    run's dozen rows at batch 32) left the model exactly as it was and every Δ at 0."""
    train_and_evaluate(run_dir, eval_beir, seed=0, model_out=tmp_path / "one-step", **{**TINY, "max_steps": 1})
    from sentence_transformers import SentenceTransformer

    rows = load_training_rows(run_dir)
    texts = rows["anchor"][:16] + rows["positive"][:16]
    base = load_model(max_seq_length=TINY["max_seq_length"])
    trained = SentenceTransformer(str(tmp_path / "one-step"), device="cpu")
    assert np.abs(trained.encode(texts) - base.encode(texts)).max() > 1e-4, "one MNRL step changed nothing"


def test_compare_two_entries_two_seeds_then_resume(run_dir, eval_beir, tmp_path, cache_dir, synth_cli):
    out = tmp_path / "cmp"
    recipe = REPO / "recipes" / "resa2.yaml"
    overrides = [*RUN_SET, f"embed.cache_dir={cache_dir}"]
    budget = {**TINY, "max_steps": 2}
    rows = compare([str(recipe), str(run_dir), "base"], eval_beir, [0, 1], out, overrides=overrides, **budget)
    assert [r["entry"] for r in rows] == ["resa2", run_dir.name, "base"]
    summary = json.loads((out / "compare.json").read_text())
    assert len(summary["computed"]) == 5 and summary["reused"] == []  # 2 entries x 2 seeds + base once
    for r in rows:
        assert in_unit_interval(r)
        assert r["n"] == (1 if r["entry"] == "base" else 2)
    cells = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    by = {(c["entry"], c["seed"]): c["metrics"] for c in cells}
    # The recipe at seed 0 makes the same data as the fixture's run (seed 0): same numbers.
    assert by[("resa2", 0)] == by[(run_dir.name, 0)]
    md = (out / "compare.md").read_text()
    assert "±" in md and "| resa2 | recipe | 0,1 |" in md and "nDCG@10" in md
    mean = statistics.fmean([by[("resa2", 0)]["ndcg@10"], by[("resa2", 1)]["ndcg@10"]])
    assert f"{mean:.4f} ±" in md
    # The recipe's false-negative probe runs on its source (18 scifact-mini queries have 2+ positives);
    # the run folder brings none, so its column stays empty.
    probes = {(c["entry"], c["seed"]): c["fn_probe"] for c in cells}
    for seed in (0, 1):
        probe = probes[("resa2", seed)]
        assert probe["probed_queries"] == 18 and 0.0 <= probe["fn_rate"] <= 1.0 and probe["mean_rank"] >= 1
        stored = json.loads((out / "runs" / f"resa2-seed{seed}" / "fn_probe.json").read_text())
        assert stored["fn_rate"] == probe["fn_rate"] and stored["seed"] == seed
    assert probes[(run_dir.name, 0)] is None and probes[("base", None)] is None
    by_entry = {r["entry"]: r for r in rows}
    assert by_entry["resa2"]["fn_probe"] == pytest.approx(
        statistics.fmean(probes[("resa2", s)]["fn_rate"] for s in (0, 1))
    )
    assert by_entry[run_dir.name]["fn_probe"] is None and by_entry[run_dir.name]["probe_rank"] is None

    # Rerun through the CLI: every cell is reused, nothing is trained.
    t0 = time.perf_counter()
    proc = synth_cli(
        "compare",
        str(recipe),
        str(run_dir),
        "base",
        "--beir",
        str(eval_beir),
        "--seeds",
        "0,1",
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-seq-length",
        "32",
        *[a for s in overrides for a in ("--set", s)],
        check=True,
    )
    again = json.loads((out / "compare.json").read_text())
    assert again["computed"] == [] and len(again["reused"]) == 5
    assert again["rows"] == summary["rows"] and "±" in proc.stdout
    assert time.perf_counter() - t0 < 60


def test_compare_probes_first_seed_only_when_asked(eval_beir, tmp_path, cache_dir):
    out = tmp_path / "cmp-first"
    overrides = [*RUN_SET, f"embed.cache_dir={cache_dir}"]
    rows = compare(
        [str(REPO / "recipes" / "resa2.yaml")],
        eval_beir,
        [1, 0],
        out,
        overrides=overrides,
        **{**TINY, "max_steps": 1},
        probe_all_seeds=False,
    )
    cells = {c["seed"]: c for c in (json.loads(p.read_text()) for p in (out / "cells").glob("*.json"))}
    assert sorted(cells) == [0, 1]
    # "First" is the first seed given (1), not the smallest; the other seed's run has no probe at all.
    assert cells[1]["fn_probe"]["probed_queries"] == 18 and cells[0]["fn_probe"] is None
    assert not (out / "runs" / "resa2-seed0" / "fn_probe.json").exists()
    assert rows[0]["fn_probe"] == cells[1]["fn_probe"]["fn_rate"] and rows[0]["n"] == 2


def test_bad_input_is_one_line_exit_2(synth_cli, eval_beir, run_dir, tmp_path):
    from datasets import Dataset

    empty = tmp_path / "empty"
    Dataset.from_dict({"anchor": [], "positive": []}).save_to_disk(str(empty))
    cases = [
        (["eval", str(tmp_path / "missing"), "--beir", str(eval_beir)], "no such dataset folder"),
        (["eval", str(run_dir), "--beir", str(eval_beir), "--split", "dev"], "qrels"),
        (["eval", str(empty), "--beir", str(eval_beir)], "no rows"),
        (["compare", "base", "--beir", str(eval_beir), "--seeds", "0,x", "--out", str(tmp_path / "c")], "--seeds"),
    ]
    for args, expected in cases:
        proc = synth_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_entries_carry_their_own_overrides_and_both_metrics_get_a_delta(eval_beir, tmp_path, cache_dir):
    """Two rows of one recipe that differ by their entry's own --set items (benchmarks/zero_label.py's filters
    on / off): separate runs and cells, each with a paired Δ against the anchor for nDCG@10 and Recall@100."""
    recipe = REPO / "recipes" / "resa2.yaml"
    out = tmp_path / "cmp-entries"
    entries = [
        Entry("base", "base"),
        Entry("top-only", "recipe", recipe, overrides=["mine.sampler.k2=1"]),
        Entry("shipped", "recipe", recipe),
    ]
    common = [*RUN_SET, f"embed.cache_dir={cache_dir}"]
    rows = compare(
        entries, eval_beir, [0], out, overrides=common, **{**TINY, "max_steps": 1}, probe=False, anchor="base"
    )
    recipes = {
        label: json.loads((out / "runs" / f"{label}-seed0" / "report.json").read_text())["recipe"]
        for label in ("top-only", "shipped")
    }
    assert recipes["top-only"]["mine"]["sampler"]["k2"] == 1 != recipes["shipped"]["mine"]["sampler"]["k2"]
    assert recipes["top-only"]["mine"]["n_negatives"] == recipes["shipped"]["mine"]["n_negatives"] == 1  # common
    for row in rows[1:]:
        ndcg, recall = row["vs_anchor"], row["vs_anchor_recall"]
        assert ndcg["anchor"] == "base" and ndcg["metric"] == "ndcg@10" and recall["metric"] == "recall@100"
        for d in (ndcg, recall):
            assert d["ci95"][0] <= d["delta"] <= d["ci95"][1] and d["queries"] == 30
        assert row["data_seconds"] > 0
    assert "vs_anchor" not in rows[0]
