"""``synth run recipes/zero_label.yaml`` (issue 24): the example's corpus alone, no queries and no qrels, on the
bundled LLM. The output is a DatasetDict that trains as loaded, a card and a report; every training query is
synthetic and carries its source chunk's document id and offset; no negative comes from its query's own
document; a rerun sends no LLM request.

The runs read the example's first 300 documents (~480 chunks), not all 1,200: the chunks are embedded cold here
(~2 minutes for the whole corpus on CI's two busy cores), and what is checked does not depend on the size. The
round trip keeps a query whose chunk is in its top 100 (of ~480; the recipe: top 20 of ~1,930): the bundled
135M model's queries are what they are, and the round-trip filter itself is tested on its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk
from sentence_transformers.losses import MultipleNegativesRankingLoss

from synth.formats.st import text_columns, with_provenance
from synth.sources.corpus import CorpusSource, load_corpus
from tests.conftest import EXAMPLE, REPO
from tests.e2e.test_edges_trainable import train_one_step

RECIPE = REPO / "recipes" / "zero_label.yaml"
DOCS = 300
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_cut(tmp_path_factory) -> Path:
    """The example's first ``DOCS`` documents, as the recipe's corpus file."""
    lines = (EXAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path_factory.mktemp("zero-label-corpus") / "corpus.jsonl"
    path.write_text("".join(lines[:DOCS]), encoding="utf-8")
    return path


def _run(cache: Path, out: Path, corpus: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "synth",
            "run",
            str(RECIPE),
            "--out",
            str(out),
            "--set",
            f"source.path={corpus}",
            "--set",
            "synthetic_queries.filters.round_trip_k=100",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def zero_label_run(cache_dir, tmp_path_factory, corpus_cut) -> Path:
    out = tmp_path_factory.mktemp("zero-label") / "run"
    proc = _run(cache_dir, out, corpus_cut)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_dry_run_prices_it_like_every_recipe(cache_dir, tmp_path):
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache_dir), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", str(RECIPE), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "synthetic_queries" in proc.stdout and "total" in proc.stdout


def test_no_queries_and_no_qrels_anywhere_and_every_row_is_synthetic(zero_label_run, corpus_cut):
    report = json.loads((zero_label_run / "report.json").read_text())
    assert report["stages"]["load"]["queries"] == 0 and report["output"]["files"] == {}
    assert not list(zero_label_run.rglob("qrels")) and not list(zero_label_run.rglob("queries.jsonl"))
    rows = with_provenance(load_from_disk(str(zero_label_run / "dataset")), "triplets").to_list()
    assert rows and {r["query_origin"] for r in rows} == {"synthetic"}
    corpus = load_corpus(_source(report, corpus_cut)).corpus
    for r in rows:
        row = corpus.row_of[r["positive_id"]]
        assert (r["source_doc_id"], r["source_offset"]) == (corpus.doc_ids[row], corpus.offsets[row])
        assert r["positive"] == corpus.texts[row]
        own = corpus.doc_ids[row]
        assert all(corpus.document_of(corpus.row_of[n]) != own for n in r["negative_ids"])


def _source(report: dict, corpus: Path) -> CorpusSource:
    """The run's source settings, read back from its report, on the corpus file it read (the report publishes
    a path outside the repository as ``.../<name>``)."""
    cfg = dict(report["recipe"]["source"])
    assert cfg["path"].endswith(corpus.name)
    cfg["path"] = str(corpus)
    return CorpusSource(**cfg)


def test_the_report_and_the_card_say_what_the_fn_judge_learns(zero_label_run):
    report = json.loads((zero_label_run / "report.json").read_text())
    (line,) = [n for n in report["notices"] if n.startswith("zero-label source")]
    assert "no query with two labelled positives" in line and "fn_risk falls back" in line
    assert "zero-label source (documents only)" in (zero_label_run / "README.md").read_text()


def test_the_dataset_trains_as_loaded(zero_label_run, tmp_path):
    ds = load_from_disk(str(zero_label_run / "dataset"))["triplets"]
    assert ds.column_names == text_columns("n-tuple", 3)
    train_one_step(ds, MultipleNegativesRankingLoss, tmp_path)


def test_a_rerun_sends_no_llm_request(zero_label_run, cache_dir, corpus_cut, tmp_path):
    proc = _run(cache_dir, tmp_path / "again", corpus_cut)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["llm"]["requests_sent"] == 0
    first = load_from_disk(str(zero_label_run / "dataset"))["triplets"].to_list()
    assert load_from_disk(str(tmp_path / "again" / "dataset"))["triplets"].to_list() == first


def test_filters_that_drop_every_query_name_themselves_in_one_line(zero_label_run, cache_dir, corpus_cut, tmp_path):
    """The bundled 135M model's queries on a hard corpus can all fail the round trip (Cranfield: 6 of 7 at
    docs 8): the run stops with one line that counts the queries and names the filter, not a bare 'no pairs'.
    Here every query is too short for a 5,000-character minimum (answers are 64 tokens at most); the requests
    are the fixture's, answered from the cache."""
    out = tmp_path / "none-kept"
    proc = _run(
        cache_dir,
        out,
        corpus_cut,
        "--set",
        "synthetic_queries.filters.min_chars=5000",
        "--set",
        "synthetic_queries.filters.max_chars=6000",
    )
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "no (query, positive) pairs to mine: the filters dropped all" in lines[0], lines[0]
    assert "too_short" in lines[0] and "synthetic_queries.filters" in lines[0], lines[0]
    assert not out.exists()
