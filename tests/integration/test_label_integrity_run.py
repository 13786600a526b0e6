"""A whole run (the bundled model, in process) on pairs whose positives include copies of each other under other
ids: the published rows never hold a copy of their own positive as a negative, and the report counts and says
what the miner left out (issue 23)."""

from __future__ import annotations

import json

from datasets import load_from_disk

import synth
from synth.core.text import normal_text
from synth.core.text import near_duplicate_key

TOPICS = ["rain", "solar power", "bread", "chess", "volcanoes", "bees", "tides", "jazz", "glaciers", "owls"]


def test_a_run_never_publishes_a_copy_of_the_positive_as_its_negative(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("SYNTH_PROGRESS", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"anchor": f"what about {t}?", "positive": f"A short passage on {t} and how {t} works."} for t in TOPICS]
    # the same answers again for reworded questions, copied with other case / spacing / punctuation: other ids
    rows += [
        {"anchor": "tell me about rain", "positive": "a short passage on RAIN and how rain  works."},
        {"anchor": "tell me about bees", "positive": "A short passage on bees, and how bees works"},
    ]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"name: copies\nseed: 0\nsource: {{kind: jsonl, path: {pairs}}}\nembed: {{cache_dir: {cache_dir}}}\n"
        "mine:\n  n_negatives: 3\n  sampler: {kind: topk, range_max: 6}\noutput: {format: triplet}\n",
        encoding="utf-8",
    )
    report = synth.run(recipe, tmp_path / "out")
    # each copy is excluded for both queries whose positive it copies: rain's copy is rain's query's, and back
    assert report["mining"]["positive_copies"] == 2
    assert report["mining"]["positive_near_duplicates"] == 2
    assert any("exact copies" in line for line in report["notices"])
    triplets = load_from_disk(str(tmp_path / "out" / "dataset"))["triplets"]
    assert len(triplets) == len(rows) * 3
    for row in triplets:
        assert normal_text(row["negative"]) != normal_text(row["positive"])
        assert near_duplicate_key(row["negative"]) != near_duplicate_key(row["positive"])
