"""``synth relabel`` end to end through the real CLI: a saved n-tuple dataset and a Tevatron file,
a three-stage cascade (embedding margin -> tiny cross-encoder -> the embedded LLM on a narrow band),
output contract, reapply without LLM calls, Tevatron round trip, kill + resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_from_disk

from tests.conftest import EXAMPLE, REPO
from tests.support.kill import kill_once_stored

N_QUERIES = 20
N_NEG = 3
LLM_BAND = 4  # candidates whose CE margin falls in the LLM band (the rest is decided before the LLM)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _example_source() -> tuple[dict, dict, dict[str, list[str]]]:
    """The bundled SciFact subset: corpus by id, query texts by id, positives per query."""
    corpus = {d["_id"]: d for d in _jsonl(EXAMPLE / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in _jsonl(EXAMPLE / "queries.jsonl")}
    qrels: dict[str, list[str]] = defaultdict(list)
    for line in (EXAMPLE / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if int(s) > 0 and d in corpus and q in queries:
            qrels[q].append(d)
    return corpus, queries, qrels


def _scifact() -> tuple[list[dict], dict, list[dict]]:
    """~20 queries with a positive and 3 negatives each. Queries with two positives get the second
    one planted as their first negative (a known false negative)."""
    corpus, queries, qrels = _example_source()
    multi = [q for q in qrels if len(qrels[q]) > 1][:4]
    chosen = multi + [q for q in qrels if q not in multi][: N_QUERIES - len(multi)]
    doc_ids = sorted(corpus)
    out = []
    for i, q in enumerate(chosen):
        pos = qrels[q][0]
        negs = qrels[q][1:2]
        k = 7 * i
        while len(negs) < N_NEG:
            d = doc_ids[k % len(doc_ids)]
            k += 1
            if d not in qrels[q] and d not in negs:
                negs.append(d)
        out.append({"query_id": q, "query": queries[q], "pos": pos, "negs": negs})
    return out, corpus, chosen


def _doc_text(doc: dict) -> str:
    return f"{doc['title']} {doc['text']}".strip()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("relabel-inputs")
    items, corpus, _ = _scifact()
    cols: dict[str, list] = defaultdict(list)
    for it in items:
        cols["anchor"].append(it["query"])
        cols["positive"].append(_doc_text(corpus[it["pos"]]))
        for j, d in enumerate(it["negs"]):
            cols[f"negative_{j + 1}"].append(_doc_text(corpus[d]))
        cols["query_id"].append(it["query_id"])
        cols["positive_id"].append(it["pos"])
        cols["negative_ids"].append(list(it["negs"]))
    ntuple = root / "ntuple"
    Dataset.from_dict(dict(cols)).save_to_disk(str(ntuple))

    tev = root / "train.jsonl"
    with open(tev, "w") as f:
        for it in items:

            def p(d):
                return {"docid": d, "title": corpus[d]["title"], "text": corpus[d]["text"]}

            f.write(
                json.dumps(
                    {
                        "query_id": it["query_id"],
                        "query": it["query"],
                        "positive_passages": [p(it["pos"])],
                        "negative_passages": [p(d) for d in it["negs"]],
                        "answers": ["x"],
                    }
                )
                + "\n"
            )
    return {"ntuple": ntuple, "tevatron": tev, "root": root}


@pytest.fixture(scope="module")
def cascade(inputs, cache_dir) -> Path:
    """The cascade file, with CE thresholds chosen so that exactly LLM_BAND candidates fall between them."""
    from sentence_transformers import CrossEncoder

    from synth.pipeline.relabel import add_bi_scores, build_candidates
    from synth.formats import read_input

    root = inputs["root"]
    # A real trained judge, through the real command: `synth train-judge` on the example's labelled
    # positives (a small budget keeps it to seconds).
    ce_dir = root / "tiny-ce"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "synth",
            "train-judge",
            "--source",
            str(EXAMPLE),
            "--out",
            str(ce_dir),
            "--max-pairs",
            "96",
            "--max-length",
            "128",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["counts"]["examples"] == 96 and (ce_dir / "synth_judge.json").is_file()
    ce = CrossEncoder(str(ce_dir), max_length=128, device="cpu")
    inp = read_input(inputs["ntuple"])
    cands, _ = add_bi_scores(inp, build_candidates(inp)[0], cache_dir)  # fills the run's embedding cache too
    bi = sorted(c.bi_score - c.positive_bi_score for c in cands)
    margin_cut = (bi[len(bi) // 2 - 1] + bi[len(bi) // 2]) / 2  # the margin stage clears half
    cands = [c for c in cands if c.bi_score - c.positive_bi_score >= margin_cut]
    neg = ce.predict([(c.query, c.doc) for c in cands], show_progress_bar=False)
    pos = ce.predict([(c.query, c.positive) for c in cands], show_progress_bar=False)
    m = sorted(float(a - b) for a, b in zip(neg, pos))
    k = (len(m) - LLM_BAND) // 2
    lo, hi = (m[k - 1] + m[k]) / 2, (m[k + LLM_BAND - 1] + m[k + LLM_BAND]) / 2
    path = root / "cascade.yaml"
    path.write_text(f"""name: test_cascade
stages:
  - kind: embedding_margin
    name: margin
    negative_below: {margin_cut!r}
    decides: [negative]
  - kind: cross_encoder
    name: ce
    model: tiny-ce
    max_length: 128
    device: cpu
    negative_below: {lo!r}
    false_negative_at_or_above: {hi!r}
  - kind: llm_pointwise
    name: llm
    max_tokens: 24
    max_doc_chars: 400
""")
    return path


def _llm() -> str:
    return "{kind: local, threads: 2, parallel: 2, n_ctx: 4096}"


@pytest.fixture(scope="module")
def ntuple_run(synth_cli, inputs, cascade, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relabel") / "nt"
    synth_cli(
        "relabel",
        "--input",
        str(inputs["ntuple"]),
        "--judges",
        str(cascade),
        "--out",
        str(out),
        "--policy",
        "drop_false_negatives",
        "--llm",
        _llm(),
        check=True,
    )
    return out


def _assert_verdicts(out: Path, n_candidates: int) -> None:
    t = pq.read_table(str(out / "verdicts.parquet"))
    assert {"query_id", "doc_id", "stage", "verdict", "score", "model"} <= set(t.column_names)
    keys = list(zip(t["query_id"].to_pylist(), t["doc_id"].to_pylist()))
    assert len(keys) == len(set(keys)) == n_candidates
    assert set(t["verdict"].to_pylist()) <= {"negative", "false_negative", "uncertain"}


def test_ntuple_outputs_and_report(ntuple_run: Path):
    report = json.loads((ntuple_run / "report.json").read_text())
    ds = load_from_disk(str(ntuple_run / "dataset"))
    assert ds.column_names[:5] == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert {"query_id", "positive_id", "negative_ids"} <= set(ds.column_names)
    assert len(ds) == report["output"]["rows"] > 0
    for row in ds:
        assert len(row["negative_ids"]) == N_NEG == len(set(row["negative_ids"]))
    _assert_verdicts(ntuple_run, N_QUERIES * N_NEG)
    llm = report["llm"]
    assert {"requests_sent", "cache_hits", "tokens_in", "tokens_out", "failed", "stages"} <= set(llm)
    stages = report["cascade"]["stages"]
    assert [s["stage"] for s in stages] == ["margin", "ce", "llm"]
    assert 0 < stages[2]["in"] <= LLM_BAND and stages[2]["judged"] + stages[2]["reused"] == stages[2]["in"]
    judged = llm["stages"].get("judge:llm", {"requests_sent": 0, "cache_hits": 0})  # "probe": the server's warm-up
    assert judged["requests_sent"] + judged["cache_hits"] == stages[2]["judged"]
    for s in stages:
        assert {"in", "decided", "uncertain", "failures", "seconds"} <= set(s)
    assert stages[0]["in"] == N_QUERIES * N_NEG
    assert report["input"]["layout"] == "n-tuple" and report["input"]["queries"] == N_QUERIES
    assert report["bi_scores"]["embedded"] == N_QUERIES * N_NEG  # no mined scores in this input
    assert "stages:" in report["judges"]["content"] and report["seed"] == 0
    assert report["policy"]["policy"] == "drop_false_negatives" and "environment" in report


def test_reapply_sends_nothing_and_is_fast(synth_cli, ntuple_run: Path, tmp_path):
    out = tmp_path / "reapplied"
    t0 = time.perf_counter()
    proc = synth_cli("relabel", "--reapply", str(ntuple_run), "--policy", "drop_pair", "--out", str(out), check=True)
    took = time.perf_counter() - t0
    assert took < 15, f"reapply took {took:.1f}s"
    report = json.loads((out / "report.json").read_text())
    assert report["llm"]["requests_sent"] == 0 and report["policy"]["policy"] == "drop_pair"
    assert "requests sent 0" in proc.stdout
    flagged = {
        (q, d)
        for q, d, v in zip(
            *[pq.read_table(str(out / "verdicts.parquet"))[c].to_pylist() for c in ("query_id", "doc_id", "verdict")]
        )
        if v != "negative"
    }
    ds = load_from_disk(str(out / "dataset"))
    for row in ds:  # drop_pair: no surviving row of a query with a flagged negative
        assert not any((row["query_id"], d) in flagged for d in row["negative_ids"])
    assert len(ds) == N_QUERIES - len({q for q, _ in flagged})


def test_tevatron_round_trip(synth_cli, inputs, cascade, tmp_path):
    out = tmp_path / "tev"
    synth_cli(
        "relabel",
        "--input",
        str(inputs["tevatron"]),
        "--judges",
        str(cascade),
        "--out",
        str(out),
        "--policy",
        "keep",
        "--llm",
        _llm(),
        check=True,
    )
    assert _jsonl(out / "data.jsonl") == _jsonl(inputs["tevatron"])  # lossless: ids, titles, texts, order, extras
    _assert_verdicts(out, N_QUERIES * N_NEG)
    again = tmp_path / "tev2"
    synth_cli("relabel", "--reapply", str(out), "--policy", "relabel_as_positive", "--out", str(again), check=True)
    rows = _jsonl(again / "data.jsonl")
    fn = {
        (q, d)
        for q, d, v in zip(
            *[pq.read_table(str(out / "verdicts.parquet"))[c].to_pylist() for c in ("query_id", "doc_id", "verdict")]
        )
        if v == "false_negative"
    }
    for row in rows:
        negs = {p["docid"] for p in row["negative_passages"]}
        pos = {p["docid"] for p in row["positive_passages"]}
        assert not negs & {d for q, d in fn if q == row["query_id"]}
        assert {d for q, d in fn if q == row["query_id"]} <= pos


def test_kill_then_resume(inputs, cascade, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "synth",
        "relabel",
        "--input",
        str(inputs["tevatron"]),
        "--judges",
        str(cascade),
        "--out",
        str(out),
        "--llm",
        _llm(),
    ]
    kill_once_stored(args, cwd=REPO, env=env, cache=cache, pattern="relabel/*/verdicts.sqlite", timeout=240)
    assert not out.exists()  # killed mid-run: no half-written --out
    done = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_verdicts(out, N_QUERIES * N_NEG)
    assert (out / "data.jsonl").exists()
    report = json.loads((out / "report.json").read_text())
    assert report["cascade"]["stages"][0]["reused"] == N_QUERIES * N_NEG  # stage 1 came from the store


def test_bad_judges_file_is_one_line(synth_cli, inputs, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - kind: cross_encoder\n    model: m\n    bogus: 1\n")
    proc = synth_cli("relabel", "--input", str(inputs["tevatron"]), "--judges", str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "bogus" in proc.stderr or "unknown key" in proc.stderr
    proc = synth_cli(
        "relabel",
        "--input",
        str(inputs["tevatron"]),
        "--judges",
        str(tmp_path / "none.yaml"),
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query_id": "1", "query": "q", "positive_passages": [], "negative_passages": []}\nnot json\n')
    proc = synth_cli(
        "relabel",
        "--input",
        str(broken),
        "--judges",
        str(REPO / "judges" / "llm_only.yaml"),
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and ":2:" in proc.stderr
    proc = synth_cli(
        "relabel",
        "--input",
        str(inputs["tevatron"]),
        "--judges",
        str(REPO / "judges" / "llm_only.yaml"),
        "--out",
        str(tmp_path / "o"),
        "--policy",
        "nope",
    )
    assert proc.returncode == 2 and "policy" in proc.stderr


def test_triplet_content_ids_and_policies(tmp_path):
    """Triplet without provenance: content ids, grouping by query, one row per (positive, negative),
    promoted positives get rows; n-tuple rows are refilled from the query's other negatives."""
    from synth.judge.policies import apply_policy
    from synth.core.text import content_id
    from synth.formats import read_input, write_output

    def text_id(prefix: str, text: str) -> str:  # relabel's id of a text without provenance ids
        return prefix + content_id(text)

    rows = {
        "anchor": ["q1", "q1", "q1", "q2"],
        "positive": ["p1", "p1", "p2", "p3"],
        "negative": ["n1", "n2", "n1", "n3"],
    }
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "trip"))
    inp = read_input(tmp_path / "trip")
    assert inp.layout == "triplet" and [e.query_id for e in inp.examples] == [text_id("q-", "q1"), text_id("q-", "q2")]
    ex = inp.examples[0]
    assert [p.text for p in ex.positives] == ["p1", "p2"] and [p.text for p in ex.negatives] == ["n1", "n2"]
    n1 = (ex.query_id, text_id("d-", "n1"))
    kept, _ = apply_policy(inp.examples, {n1: "false_negative"}, "relabel_as_positive")
    (tmp_path / "o").mkdir()
    got = write_output(inp, kept, tmp_path / "o")
    ds = load_from_disk(str(tmp_path / "o" / "dataset"))
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert list(zip(ds["anchor"], ds["positive"], ds["negative"])) == [
        ("q1", "p1", "n2"),
        ("q1", "n1", "n2"),
        ("q2", "p3", "n3"),
    ]
    assert got["rows_for_promoted_positives"] == 1

    cols = {"anchor": ["q1", "q1"], "positive": ["p1", "p2"], "negative_1": ["a", "c"], "negative_2": ["b", "d"]}
    Dataset.from_dict(cols).save_to_disk(str(tmp_path / "nt"))
    inp = read_input(tmp_path / "nt")
    assert inp.layout == "n-tuple" and inp.n == 2 and len(inp.examples) == 1
    qid = inp.examples[0].query_id
    kept, _ = apply_policy(inp.examples, {(qid, text_id("d-", "b")): "uncertain"}, "drop_false_negatives")
    (tmp_path / "o2").mkdir()
    got = write_output(inp, kept, tmp_path / "o2")
    ds = load_from_disk(str(tmp_path / "o2" / "dataset"))
    assert ds.to_dict() == {
        "anchor": ["q1", "q1"],
        "positive": ["p1", "p2"],
        "negative_1": ["a", "c"],
        "negative_2": ["c", "d"],
    }
    assert got["rows_refilled"] == 1 and got["rows_short_dropped"] == 0


def test_relabel_with_the_learned_risk_judge(synth_cli, tmp_path):
    """judges/fn_risk.yaml on a Tevatron file: the risk model learns from the file's own positives (its
    passages are the corpus); a planted near-copy of a query's positive is flagged; reapply needs no model."""
    corpus, queries, qrels = _example_source()
    doc_ids = sorted(corpus)
    lines, planted = [], set()
    for i, q in enumerate(sorted(qrels)[:60]):
        negs = [d for d in doc_ids[5 * i : 5 * i + 8] if d not in qrels[q]][:4]
        passages = [{"docid": d, "title": corpus[d]["title"], "text": corpus[d]["text"]} for d in negs]
        if i % 6 == 0:  # a near-copy of the positive: its text with the last word changed
            pos = corpus[qrels[q][0]]
            words = pos["text"].split()
            passages.insert(
                0, {"docid": f"copy-{q}", "title": pos["title"], "text": " ".join(words[:-1] + ["changed"])}
            )
            planted.add((q, f"copy-{q}"))
        lines.append(
            {
                "query_id": q,
                "query": queries[q],
                "positive_passages": [
                    {"docid": d, "title": corpus[d]["title"], "text": corpus[d]["text"]} for d in qrels[q]
                ],
                "negative_passages": passages,
            }
        )
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "risk"
    proc = synth_cli(
        "relabel", "--input", str(src), "--judges", str(REPO / "judges" / "fn_risk.yaml"), "--out", str(out), check=True
    )
    assert "warning: fn_risk risk: fell back to the positive-aware perc filter" in proc.stderr
    table = pq.read_table(str(out / "verdicts.parquet")).to_pydict()
    verdict = {
        (q, d): (v, s) for q, d, v, s in zip(table["query_id"], table["doc_id"], table["verdict"], table["stage"])
    }
    assert len(verdict) == sum(len(x["negative_passages"]) for x in lines)
    assert all(s == "risk" for _, s in verdict.values())
    assert all(verdict[k][0] == "false_negative" for k in planted)
    report = json.loads((out / "report.json").read_text())
    model = report["cascade"]["stages"][0]["model_report"]
    # the file's few multi-positive queries cannot support the model: it falls back (near-copies are flagged
    # in either mode) and the report says why
    assert model["mode"] == "fallback" and "learning needs" in model["why"] and model["training_queries"] >= 1
    kept = _jsonl(out / "data.jsonl")
    assert not {(r["query_id"], p["docid"]) for r in kept for p in r["negative_passages"]} & planted
    again = tmp_path / "again"
    synth_cli("relabel", "--reapply", str(out), "--policy", "keep", "--out", str(again), check=True)
    assert json.loads((again / "report.json").read_text())["llm"]["requests_sent"] == 0
