"""recipes/resa2_plus_synthetic.yaml end to end through the real CLI, on the embedded LLM (smaller counts
than the shipped recipe): personas -> synthetic queries -> synthetic negatives -> ReSa2 -> judge cascade
-> mix with backfill -> DatasetDict + Tevatron + BEIR + card + report. The cascade here is longer than
the shipped one (the learned risk model alone), so every judge kind a run can chain is exercised:
risk model (flags escalate) -> a cross-encoder the run trains -> the LLM. Then a rerun (0 LLM requests,
verdicts and cross-encoder reused) and a run SIGKILLed inside the judge stage that resumes from the
verdict store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_from_disk

from synth.core.text import normal_text
from synth.formats.st import with_provenance
from tests.conftest import REPO, SHARED_DATA
from tests.support.kill import kill_once_stored, store_rows

RECIPE = REPO / "recipes" / "resa2_plus_synthetic.yaml"
SCIFACT = SHARED_DATA / "scifact"
# Smaller than the shipped recipe so the module stays within a few minutes on 2 busy cores.
SMALL = [
    "synthetic_queries.docs=8",
    "synthetic_queries.types_per_doc=1",
    "synthetic_negatives.max_pairs=6",
    "judge.train_cross_encoder.max_pairs=96",
    "output.files=[tevatron, beir]",
    "output.extra_formats=[labeled-pair]",
]
pytestmark = pytest.mark.slow


# The risk model clears what it can and passes its flags on; the 96-example cross-encoder trained here
# scores every margin within ~+-0.01, so its LLM band is narrow (each LLM verdict costs seconds on 2 cores, most
# of them reading the prompt: passages are cut at 300 characters, which keeps the verdicts' path whole).
CASCADE = """name: resa2_plus_synthetic_test
stages:
  - {kind: fn_risk, name: risk, decides: [negative]}
  - {kind: cross_encoder, name: ce, model: trained, max_length: 128, negative_below: 0.0,
     false_negative_at_or_above: 0.002}
  - {kind: llm_pointwise, name: llm, max_tokens: 24, max_doc_chars: 300}
"""
_CASCADE_FILE: list[Path] = []


def _sets() -> list[str]:
    args = ["--set", f"judge.cascade={_CASCADE_FILE[0]}"]
    for s in SMALL + ([f"leakage.path={SCIFACT}"] if SCIFACT.is_dir() else []):
        args += ["--set", s]
    return args


def _env(cache: Path) -> dict:
    return {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}


def _synth(cache: Path, out: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synth", "run", str(RECIPE), "--out", str(out), *_sets()],
        capture_output=True,
        text=True,
        env=_env(cache),
        timeout=timeout,
        cwd=REPO,
    )


def _private_cache(shared: Path, tmp: Path, name: str = "cache") -> Path:
    """A fresh cache that shares the session's embeddings (re-embedding the corpus would cost a minute)."""
    private = tmp / name
    private.mkdir()
    (shared / "embeddings").mkdir(parents=True, exist_ok=True)
    (private / "embeddings").symlink_to(shared / "embeddings")
    return private


def _same(a: list[dict], b: list[dict]) -> bool:
    """Row equality where NaN equals NaN (a judge that could not score leaves NaN)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def first(cache_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("full-recipe")
    (tmp / "cascade.yaml").write_text(CASCADE)
    _CASCADE_FILE[:] = [tmp / "cascade.yaml"]
    cache = _private_cache(cache_dir, tmp)
    out = tmp / "run"
    t0 = time.perf_counter()
    proc = _synth(cache, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "cache": cache, "tmp": tmp, "seconds": time.perf_counter() - t0}


def test_dataset_configs_provenance_and_verdicts(first):
    out = first["out"]
    report = _report(out)
    dd = load_from_disk(str(out / "dataset"))
    assert {
        "triplets",
        "triplets_provenance",
        "verdicts",
        "personas",
        "synthetic_queries",
        "labeled_pair",
        "labeled_pair_provenance",
    } <= set(dd)
    assert report["output"]["configs"] == {name: len(ds) for name, ds in dd.items()}
    rows = with_provenance(dd, "triplets").to_list()
    assert rows and report["output"]["rows"] == len(rows)
    assert dd["triplets"].column_names == [
        "anchor",
        "positive",
        "negative_1",
        "negative_2",
        "negative_3",
        "negative_4",
    ]  # mix: 3 mined + 1 synthetic; trains as loaded
    verdict_of = {(v["query_id"], v["doc_id"]): v for v in dd["verdicts"].to_list()}
    synthetic_ids = {n["id"] for n in dd["synthetic_negatives"].to_list()} if "synthetic_negatives" in dd else set()
    for r in rows:
        negs = [r[f"negative_{i}"] for i in range(1, 5)]
        assert len({normal_text(t) for t in negs}) == 4, "duplicate negative texts in a row"
        assert normal_text(r["positive"]) not in {normal_text(t) for t in negs}
        assert len(r["negative_sources"]) == len(r["negative_ids"]) == len(r["negative_verdicts"]) == 4
        for doc_id, source, verdict, stage in zip(
            r["negative_ids"], r["negative_sources"], r["negative_verdicts"], r["negative_judge_stages"]
        ):
            assert verdict == "negative" and stage  # drop_false_negatives keeps only cleared negatives
            stored = verdict_of[(r["query_id"], doc_id)]
            assert stored["verdict"] == verdict and stored["source"] == source
            assert (source == "synthetic") == (doc_id in synthetic_ids)
    # a pair whose LLM-written negative the cascade cleared gets it beside its mined ones
    cleared = (
        {
            (n["query_id"], n["positive_id"])
            for n in dd["synthetic_negatives"].to_list()
            if verdict_of[(n["query_id"], n["id"])]["verdict"] == "negative"
        }
        if synthetic_ids
        else set()
    )
    for r in rows:
        if (r["query_id"], r["positive_id"]) in cleared:
            assert r["negative_sources"] == ["mined", "mined", "mined", "synthetic"]
        else:  # its synthetic slot was refilled with a mined negative
            assert r["negative_sources"] == ["mined"] * 4
    assert sum("synthetic" in r["negative_sources"] for r in rows) <= report["mix"]["pairs_with_synthetic"]

    judging = report["judging"]
    assert [s["stage"] for s in judging["stages"]] == ["risk", "ce", "llm"]
    risk = judging["stages"][0]["model_report"]
    # the example's few multi-positive queries cannot support the model: the stage falls back and says so
    assert risk["mode"] == "fallback" and "learning needs" in risk["why"] and risk["training_queries"] > 0
    assert any(line.startswith("fn_risk risk: fell back") for line in report["notices"])
    counts = {k: 0 for k in ("negative", "false_negative", "uncertain")}
    for v in verdict_of.values():
        counts[v["verdict"]] += 1
    assert counts == judging["final"]
    assert len(verdict_of) == judging["candidates"]["unique"] == judging["stages"][0]["candidates"]
    assert judging["candidates"]["synthetic"] == sum(v["source"] == "synthetic" for v in verdict_of.values())
    assert judging["policy"]["policy"] == "drop_false_negatives"
    assert judging["cross_encoder"]["reused"] is False and judging["cross_encoder"]["counts"]["examples"] == 96
    assert report["mix"]["target"] == {"mined": 3, "synthetic": 1}
    llm_stage = judging["stages"][2]
    if llm_stage["judged"]:
        assert report["llm"]["stages"]["judge:llm"]["requests_sent"] > 0

    licenses = {k: v.lower() for k, v in report["licenses"].items()}
    assert licenses == {
        "corpus": "cc-by-nc-2.0",
        "personas": "apache-2.0",
        "llm": "apache-2.0",
        "embedder": "apache-2.0",
    }
    assert (out / "README.md").is_file() and (out / "report.html").is_file()
    tev = [json.loads(x) for x in (out / "tevatron" / "train.jsonl").read_text().splitlines()]
    # Tevatron takes lists of any length: every query with a pair the judges left standing, even one
    # short of the n-tuple's 4 negatives
    assert len(tev) == report["output"]["files"]["tevatron"]["rows"]
    assert {t["query_id"] for t in tev} >= {r["query_id"] for r in rows}
    by_query = {t["query_id"]: t for t in tev}
    for r in rows:
        assert set(r["negative_ids"]) <= {p["docid"] for p in by_query[r["query_id"]]["negative_passages"]}
    beir_qrels = (out / "beir" / "qrels" / "train.tsv").read_text().splitlines()
    assert beir_qrels[0] == "query-id\tcorpus-id\tscore"
    assert {tuple(x.split("\t")[:2]) for x in beir_qrels[1:]} >= {(r["query_id"], r["positive_id"]) for r in rows}


def test_leakage_report(first):
    leak = _report(first["out"])["leakage"]
    if not SCIFACT.is_dir():
        assert leak["checked"] is False and "test" in leak["reason"]
        return
    # scifact-mini's queries are SciFact train queries; 41 of its positives are also SciFact test positives
    assert leak["checked"] is True and leak["split"] == "test" and leak["eval_queries"] == 300
    assert leak["by_kind"]["positive"] > 0 and leak["by_kind"]["query_id"] == 0
    assert set(leak["by_origin"]) <= {"real", "synthetic"} and leak["pairs_dropped"] == 0
    assert sum(o["overlapping"] for o in leak["by_origin"].values()) == leak["pairs_overlapping"]


def test_rerun_makes_no_llm_requests_and_reuses_verdicts(first):
    out2 = first["tmp"] / "rerun"
    proc = _synth(first["cache"], out2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = _report(out2)
    assert report["llm"]["requests_sent"] == 0
    judging = report["judging"]
    assert judging["cross_encoder"]["reused"] is True
    for stage in judging["stages"]:
        assert stage["judged"] == 0 and stage["reused"] == stage["candidates"]
    a = load_from_disk(str(first["out"] / "dataset"))
    b = load_from_disk(str(out2 / "dataset"))
    for name in ("triplets", "verdicts"):
        assert _same(a[name].to_list(), b[name].to_list()), name


def _store_rows(cache: Path) -> int:
    return store_rows(cache, "judge/*/verdicts.sqlite")


def test_killed_in_the_judge_stage_resumes(first, cache_dir, tmp_path):
    # The generation answers and the trained cross-encoder come along (so the kill lands in judging,
    # not in generation); the verdict store does not.
    cache = _private_cache(cache_dir, tmp_path)
    shutil.copytree(first["cache"] / "llm", cache / "llm")
    for ce in (first["cache"] / "judge").glob("ce-*"):
        shutil.copytree(ce, cache / "judge" / ce.name)
    out = tmp_path / "killed"
    kill_once_stored(
        [sys.executable, "-m", "synth", "run", str(RECIPE), "--out", str(out), *_sets()],
        cwd=REPO,
        env=_env(cache),
        cache=cache,
        pattern="judge/*/verdicts.sqlite",
        timeout=600,
    )
    assert not out.exists()
    at_kill = _store_rows(cache)

    done = _synth(cache, out)
    assert done.returncode == 0, done.stderr[-3000:]
    report = _report(out)
    stages = report["judging"]["stages"]
    assert sum(s["reused"] for s in stages) >= at_kill  # nothing stored before the kill is judged again
    assert all(s["judged"] + s["reused"] == s["candidates"] for s in stages)
    first_ds = load_from_disk(str(first["out"] / "dataset"))
    resumed = load_from_disk(str(out / "dataset"))
    keys = [(r["query_id"], r["positive_id"]) for r in resumed["triplets_provenance"]]
    assert len(keys) == len(set(keys))  # nothing duplicated
    for name in ("triplets", "triplets_provenance", "verdicts"):  # nothing lost: the same data as the uninterrupted run
        assert _same(resumed[name].to_list(), first_ds[name].to_list()), name


def test_bad_cascade_is_one_line(synth_cli, tmp_path):
    proc = synth_cli("run", str(RECIPE), "--out", str(tmp_path / "o"), "--set", "judge.cascade=nope.yaml")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "judge.cascade" in proc.stderr
    proc = synth_cli("run", str(RECIPE), "--out", str(tmp_path / "o"), "--set", "mix.mined=7")
    assert proc.returncode == 2 and "mix.mined" in proc.stderr


def test_leakage_counts_and_drop(tmp_path):
    """The check itself on a hand-made evaluation split: every kind, both origins, and drop."""
    from synth.leakage import check_pairs, load_eval_split

    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "e1", "text": "What  cures Colds?"}\n{"_id": "e2", "text": "unrelated"}\n{"_id": "t9", "text": "x"}\n'
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ne1\td1\t1\ne2\td2\t1\ne2\td3\t0\n")
    ev = load_eval_split(tmp_path, "test")
    assert ev.query_ids == {"e1", "e2"} and ev.doc_ids == {"d1", "d2"}
    assert load_eval_split(tmp_path, "dev") is None
    overlapping, rep = check_pairs(
        ev,
        query_ids=["e2", "q2", "q3", "q4", "sq-1", "q6"],
        query_texts=["a", "what cures colds?", "b", "c", "d", "e"],
        positive_ids=["p", "p", "d1", "p", "d2", "p"],
        negative_ids=[["n"], ["n"], ["n"], ["n", "d3", "d2"], ["n"], None],
        origins=["real", "real", "real", "real", "synthetic", "real"],
    )
    assert overlapping == [True, True, True, True, True, False]
    assert rep["by_kind"] == {"query_id": 1, "query_text": 1, "positive": 2, "negative": 1}
    assert rep["pairs_checked"] == 5 and rep["by_origin"]["synthetic"]["positive"] == 1


def test_leakage_drop_on_a_plain_recipe(synth_cli, tmp_path):
    """No LLM: ReSa2 on scifact-mini against full SciFact's test split, overlapping pairs dropped."""
    if not SCIFACT.is_dir():
        pytest.skip(f"{SCIFACT} is absent")
    out = tmp_path / "leak"
    synth_cli(
        "run",
        str(REPO / "recipes" / "resa2.yaml"),
        "--out",
        str(out),
        "--set",
        f"leakage.path={SCIFACT}",
        "--set",
        "leakage.drop=true",
        check=True,
    )
    report = _report(out)
    leak = report["leakage"]
    assert leak["checked"] and leak["pairs_dropped"] == leak["pairs_overlapping"] > 0
    rows = with_provenance(load_from_disk(str(out / "dataset")), "triplets").to_list()
    assert len(rows) == leak["pairs_checked"] - leak["pairs_dropped"] - report["output"]["short_pairs_dropped"]
    from synth.leakage import load_eval_split

    ev = load_eval_split(SCIFACT, "test")
    for r in rows:
        assert r["positive_id"] not in ev.doc_ids and not set(r["negative_ids"]) & ev.doc_ids
