"""Relabeling a synth run's own dataset: per-negative provenance lists follow their negatives."""

from __future__ import annotations

import dataclasses

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from synth.formats import read_input, write_output
from synth.formats.st import layout_configs, with_provenance


def _run_dataset(tmp_path, split: bool):
    """A synth-run-shaped DatasetDict: n-tuple rows (n = 3) with the judge/mix provenance lists; q1 has
    two positives, so its rows can be refilled from each other's negatives. ``split``: the provenance in
    the parallel ``triplets_provenance`` config, as runs write it; else inside ``triplets`` (older runs)."""
    rows = {
        "anchor": ["q one", "q one", "q two"],
        "positive": ["pos one", "pos one b", "pos two"],
        "negative_1": ["a", "d", "g"],
        "negative_2": ["b", "e", "h"],
        "negative_3": ["c", "f", "i"],
        "query_id": ["q1", "q1", "q2"],
        "positive_id": ["p1", "p1b", "p2"],
        "negative_ids": [["da", "db", "dc"], ["dd", "de", "df"], ["dg", "dh", "di"]],
        "negative_scores": [[0.5, 0.4, 0.3], [0.6, 0.5, 0.4], [0.7, 0.6, 0.5]],
        "positive_score": [0.9, 0.8, 0.7],
        "negative_sources": [
            ["mined", "synthetic", "mined"],
            ["synthetic", "mined", "mined"],
            ["mined", "mined", "synthetic"],
        ],
        "negative_judge_scores": [[-0.2, -0.3, -0.4], [-0.1, -0.2, -0.5], [-0.6, -0.7, -0.8]],
        "negative_judge_stages": [["margin", "ce", "margin"], ["ce", "margin", "ce"], ["ce", "ce", "llm"]],
    }
    path = tmp_path / "run" / "dataset"
    configs = layout_configs("triplets", rows, "n-tuple", 3) if split else {"triplets": Dataset.from_dict(rows)}
    DatasetDict(configs).save_to_disk(str(path))
    return path, rows


@pytest.mark.parametrize("split", [True, False], ids=["provenance-config", "older-run"])
def test_provenance_lists_follow_the_negatives_after_a_refill(tmp_path, split):
    path, rows = _run_dataset(tmp_path, split)
    inp = read_input(path)
    assert inp.layout == "n-tuple" and inp.n == 3
    truth = {
        (q, d): (s, j, st)
        for q, ids, src, js, sts in zip(
            rows["query_id"],
            rows["negative_ids"],
            rows["negative_sources"],
            rows["negative_judge_scores"],
            rows["negative_judge_stages"],
        )
        for d, s, j, st in zip(ids, src, js, sts)
    }
    # The judges removed q1's "db" (a synthetic negative): its row is refilled with another q1 negative.
    examples = [dataclasses.replace(ex, negatives=[p for p in ex.negatives if p.id != "db"]) for ex in inp.examples]
    out = tmp_path / "out"
    out.mkdir()
    write_output(inp, examples, out)
    ds = load_from_disk(str(out / "dataset"))
    if split:  # written in the shape it was read: text columns only, provenance beside them row for row
        assert list(ds) == ["triplets", "triplets_provenance"]
        assert ds["triplets"].column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
        assert ds["triplets_provenance"]["row_id"] == [0, 1, 2]
        ds = with_provenance(ds, "triplets")
    assert len(ds) == 3
    first = ds[0]
    assert "db" not in first["negative_ids"] and len(first["negative_ids"]) == 3
    assert first["negative_sources"] != rows["negative_sources"][0]  # the source row's lists no longer fit
    for row in ds:
        assert len(row["negative_sources"]) == len(row["negative_judge_scores"]) == len(row["negative_ids"])
        for d, s, j, st in zip(
            row["negative_ids"], row["negative_sources"], row["negative_judge_scores"], row["negative_judge_stages"]
        ):
            assert truth[(row["query_id"], d)] == (s, j, st), (row["query_id"], d)
