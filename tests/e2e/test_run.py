"""End to end through the real CLI: the output contract, formats, determinism, atomic output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from synth.formats.st import with_provenance
from synth.sources import load_source
from synth.formats.beir import BeirSource
from tests.conftest import EXAMPLE, REPO
from tests.support.runs import copy_run

PROVENANCE = ["query_id", "positive_id", "negative_ids", "negative_scores", "positive_score", "sampler", "seed"]


def _train(out: Path):
    """The training rows (the `triplets` config of the run's DatasetDict, whatever the layout) joined with
    their `triplets_provenance` config."""
    return with_provenance(load_from_disk(str(out / "dataset")), "triplets")


def _qrels():
    return load_source(BeirSource(path=str(EXAMPLE), split="train")).qrels


@pytest.fixture(scope="module")
def resa2_run(session_resa2_run, tmp_path_factory) -> Path:
    # A copy of the session's resa2 run (the rerun test below writes into it).
    return copy_run(session_resa2_run, tmp_path_factory.mktemp("run") / "resa2")


def test_contract_dataset_and_report(resa2_run: Path):
    report = json.loads((resa2_run / "report.json").read_text())
    assert report["seed"] == 0
    assert report["recipe"]["mine"]["sampler"]["kind"] == "resa2"
    assert report["recipe"]["mine"]["sampler"]["k1"] == 200  # resolved recipe, defaults filled in
    assert "kernel" in report["recipe"]["mine"]["sampler"]
    for stage in ("load", "embed", "index", "mine", "write"):
        assert set(report["stages"][stage]) >= {"rows", "seconds"}
    assert report["index"]["factory"] == "Flat" and report["index"]["device"] == "cpu"
    assert report["scores"]["space"] == "cosine"

    dd = load_from_disk(str(resa2_run / "dataset"))
    # no judge, no LLM stages, no extra formats: the training rows and their provenance
    assert list(dd) == ["triplets", "triplets_provenance"]
    assert report["output"]["configs"] == {"triplets": len(dd["triplets"]), "triplets_provenance": len(dd["triplets"])}
    assert dd["triplets"].column_names == ["anchor", "positive", *[f"negative_{i}" for i in range(1, 6)]]
    assert set(PROVENANCE) <= set(dd["triplets_provenance"].column_names)
    ds = _train(resa2_run)
    assert len(ds) == report["output"]["rows"] > 100
    qrels = _qrels()
    for row in ds:
        positives = set(qrels[row["query_id"]])
        assert row["positive_id"] in positives
        assert len(row["negative_ids"]) == 5 == len(set(row["negative_ids"]))
        assert not positives & set(row["negative_ids"]), row["query_id"]
        assert all(s <= 1.0001 for s in row["negative_scores"])
        assert row["sampler"] == "resa2" and row["seed"] == 0
        assert row["negative_sources"] == ["mined"] * 5
    assert report["leakage"]["checked"] is False  # no leakage section
    assert (resa2_run / "README.md").is_file() and (resa2_run / "report.html").is_file()


def test_rerun_is_identical_and_replaces_output(synth_cli, resa2_run: Path, tmp_path):
    first = _train(resa2_run)["negative_ids"]
    synth_cli("run", str(REPO / "recipes" / "resa2.yaml"), "--out", str(resa2_run), check=True)
    report = json.loads((resa2_run / "report.json").read_text())
    assert report["embedding"]["chunks_reused"] == report["embedding"]["chunks_total"]  # cache hit
    assert _train(resa2_run)["negative_ids"] == first
    assert not [p for p in resa2_run.parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_other_seed_changes_negatives(synth_cli, resa2_run: Path, tmp_path):
    out = tmp_path / "seed1"
    synth_cli("run", str(REPO / "recipes" / "resa2.yaml"), "--out", str(out), "--set", "seed=1", check=True)
    assert json.loads((out / "report.json").read_text())["seed"] == 1
    a = _train(resa2_run)["negative_ids"]
    b = _train(out)["negative_ids"]
    assert a != b


@pytest.mark.parametrize(
    "fmt,columns",
    [
        ("triplet", ["anchor", "positive", "negative"]),
        ("labeled-pair", ["sentence1", "sentence2", "label"]),
        ("pairs", ["anchor", "positive"]),
    ],
)
def test_formats(synth_cli, tmp_path, fmt, columns):
    out = tmp_path / fmt
    synth_cli(
        "run", str(REPO / "recipes" / "topk.yaml"), "--out", str(out), "--set", f"output.format={fmt}", check=True
    )
    assert load_from_disk(str(out / "dataset"))["triplets"].column_names == columns  # trains as loaded
    ds = _train(out)
    report = json.loads((out / "report.json").read_text())
    if fmt == "triplet":
        assert len(ds) == report["output"]["negatives"] and all(len(x) == 1 for x in ds["negative_ids"])
    if fmt == "labeled-pair":
        assert set(ds["label"]) == {0.0, 1.0}
        assert ds["label"].count(1.0) == report["output"]["pairs"]
    if fmt == "pairs":
        assert "embed" not in report["stages"] and len(ds) == report["output"]["pairs"]


def test_out_dir_that_is_not_ours_is_refused(synth_cli, tmp_path):
    (tmp_path / "precious.txt").write_text("user data")
    proc = synth_cli("run", str(REPO / "recipes" / "topk.yaml"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "not a synth output" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "user data"
