"""Source loaders and input checks, on real files written to tmp_path."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from synth.core.errors import InputError, UserError
from synth.sources import load_source
from synth.formats.beir import BeirSource
from synth.sources.hf import HFPairsSource, load_hf_pairs
from synth.sources.jsonl import JsonlPairsSource, load_jsonl_pairs


CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "first passage."},
    {"_id": "d2", "title": "", "text": "  second passage.  "},
    {"_id": "d3", "text": "third passage."},
    {"_id": "d4", "title": "Only a title", "text": ""},
]
QUERIES = [
    {"_id": "q1", "text": "what is alpha?"},
    {"_id": "q2", "text": "second?"},
    {"_id": "q3", "text": "not in the split"},
    {"_id": "q4", "text": "only a weak judgement"},
]
QRELS = "query-id\tcorpus-id\tscore\nq2\td2\t1\nq1\td1\t2\nq1\td3\t1\nq4\td4\t0\n"


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels=QRELS, split="train", gz=False) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    data = corpus if isinstance(corpus, bytes) else _jsonl(corpus)
    if gz:
        (root / "corpus.jsonl.gz").write_bytes(gzip.compress(data))
    else:
        (root / "corpus.jsonl").write_bytes(data)
    (root / "queries.jsonl").write_bytes(queries if isinstance(queries, bytes) else _jsonl(queries))
    (root / "qrels" / f"{split}.tsv").write_bytes(qrels if isinstance(qrels, bytes) else qrels.encode())
    return root


def beir(root: Path, **kw):
    return load_source(BeirSource(path=str(root), **kw))


def h16(prefix: str, text: str) -> str:
    return prefix + hashlib.blake2b(text.encode()).hexdigest()[:16]


def raises_at(where: str, match: str, fn, *args):
    with pytest.raises(InputError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith((f"{where}: expected", f"{where}: not UTF-8")), msg
    assert match in msg, msg
    assert info.value.where == where
    return msg


# -- BEIR: valid input ----------------------------------------------------------------------------


def test_beir_loads_small_folder(tmp_path):
    data = beir(write_beir(tmp_path))
    assert data.corpus.ids == ["d1", "d2", "d3", "d4"]
    assert data.corpus.texts == ["Alpha first passage.", "second passage.", "third passage.", "Only a title"]
    # queries.jsonl order, only queries with a positive in the split; q4 has only a grade-0 row
    assert data.queries.ids == ["q1", "q2"]
    assert data.queries.texts == ["what is alpha?", "second?"]
    assert data.qrels == {"q1": {"d1": 2, "d3": 1}, "q2": {"d2": 1}}
    assert data.findings.counts == {}


def test_beir_min_grade_and_split(tmp_path):
    write_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("q3\td3\t1\n")
    assert beir(tmp_path, min_grade=2).qrels == {"q1": {"d1": 2}}
    test = beir(tmp_path, split="test")
    assert test.queries.ids == ["q3"] and test.qrels == {"q3": {"d3": 1}}


def test_beir_gz_corpus(tmp_path):
    data = beir(write_beir(tmp_path, gz=True))
    assert len(data.corpus) == 4 and data.qrels["q2"] == {"d2": 1}


def test_beir_qrels_crlf_and_no_header(tmp_path):
    crlf = b"query-id\tcorpus-id\tscore\r\nq2\td2\t1\r\nq1\td1\t1\r\n"
    assert beir(write_beir(tmp_path / "a", qrels=crlf)).qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    no_header = b"q2\td2\t1\n\nq1\td1\t1"  # blank line and no final newline are fine
    assert beir(write_beir(tmp_path / "b", qrels=no_header)).qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}


def test_beir_crlf_jsonl_and_bom(tmp_path):
    corpus = b"\xef\xbb\xbf" + _jsonl(CORPUS).replace(b"\n", b"\r\n")
    data = beir(write_beir(tmp_path, corpus=corpus))
    assert data.corpus.ids[0] == "d1" and data.corpus.texts[0] == "Alpha first passage."


def test_beir_text_with_unicode_line_separator(tmp_path):
    corpus = [{"_id": "d1", "text": "a\u2028b\x85c"}, *CORPUS[1:]]
    data = beir(write_beir(tmp_path, corpus=corpus))
    assert data.corpus.texts[0] == "a\u2028b\x85c"


# -- BEIR: errors ---------------------------------------------------------------------------------


def _lines(*rows) -> bytes:
    return b"".join(r + b"\n" for r in rows)


GOOD = [json.dumps(r).encode() for r in CORPUS]


@pytest.mark.parametrize(
    "corpus, line, match",
    [
        (
            _lines(GOOD[0], GOOD[1], b'{"_id": "d3", "text": "caf\xe9"}', GOOD[3]),
            3,
            "not UTF-8 (byte 0xe9 at column 27)",
        ),
        (_lines(GOOD[0], b'{"_id": "d2", "text": }', GOOD[2]), 2, "got invalid JSON"),
        (_lines(GOOD[0], GOOD[1], b'["d3", "text"]'), 3, "expected a JSON object, got array"),
        (_lines(GOOD[0], b'{"text": "no id"}'), 2, 'expected string field "_id", got no such field'),
        (_lines(GOOD[0], b'{"_id": 7, "text": "numeric id"}'), 2, 'expected string field "_id", got number'),
        (_lines(GOOD[0], GOOD[1], b'{"_id": "d3", "text": null}'), 3, 'expected string field "text", got null'),
        (_lines(GOOD[0], b'{"_id": "d2", "title": 5, "text": "x"}'), 2, '"title", got number'),
        (_lines(GOOD[0], GOOD[1], GOOD[2], b'{"_id": "d2", "text": "again"}'), 4, 'duplicate "d2" (first on line 2)'),
    ],
)
def test_beir_corpus_errors(tmp_path, corpus, line, match):
    write_beir(tmp_path, corpus=corpus)
    raises_at(f"{tmp_path / 'corpus.jsonl'}:{line}", match, beir, tmp_path)


def test_beir_gz_corpus_bad_byte_line_number(tmp_path):
    write_beir(tmp_path, corpus=_lines(GOOD[0], GOOD[1], b'{"_id": "d3", "text": "\xff"}'), gz=True)
    raises_at(f"{tmp_path / 'corpus.jsonl.gz'}:3", "not UTF-8 (byte 0xff at column 24)", beir, tmp_path)


def test_beir_queries_errors(tmp_path):
    q = [json.dumps(r).encode() for r in QUERIES]
    write_beir(tmp_path / "a", queries=_lines(q[0], q[1], b'{"_id": "q3", "text": "\xc3"}'))
    raises_at(f"{tmp_path / 'a' / 'queries.jsonl'}:3", "not UTF-8 (byte 0xc3 at column 24)", beir, tmp_path / "a")
    write_beir(tmp_path / "b", queries=_lines(q[0], q[1], q[0]))
    raises_at(f"{tmp_path / 'b' / 'queries.jsonl'}:3", 'duplicate "q1" (first on line 1)', beir, tmp_path / "b")
    write_beir(tmp_path / "c", queries=_lines(q[0], b'{"_id": "q2"}'))
    raises_at(f"{tmp_path / 'c' / 'queries.jsonl'}:2", 'expected string field "text"', beir, tmp_path / "c")


@pytest.mark.parametrize(
    "qrels, line, match",
    [
        (b"query-id\tcorpus-id\tscore\nq1\td1\nq2\td2\t1\n", 2, "expected 3 tab-separated columns"),
        (b"q1\td1\t1\nq2 d2 1\n", 2, "got 1 (space-separated?"),
        (b"q1\td1\t1\nq2\td2\t1\tx\n", 2, "got 4"),
        (b"q1\td1\t1\nq2\td2\t1\nq1\td3\t1.5\n", 3, "expected an integer score, got '1.5'"),
        (b"q1\td1\t1\n\tq2\t1\n", 2, "expected non-empty query-id"),
        (b"q1\td1\t1\nq2\td2\t1\nq1\td3\t\xff\n", 3, "not UTF-8 (byte 0xff at column 7)"),
        (b"q1\td1\tscore\n", 1, "expected an integer score"),  # a non-BEIR header is not skipped
    ],
)
def test_beir_qrels_errors(tmp_path, qrels, line, match):
    write_beir(tmp_path, qrels=qrels)
    raises_at(f"{tmp_path / 'qrels' / 'train.tsv'}:{line}", match, beir, tmp_path)


def test_beir_layout_errors(tmp_path):
    raises_at(str(tmp_path / "nope"), "expected a BEIR folder", beir, tmp_path / "nope")
    write_beir(tmp_path)
    (tmp_path / "corpus.jsonl.gz").write_bytes(gzip.compress(_jsonl(CORPUS)))
    raises_at(str(tmp_path), "expected one of corpus.jsonl or corpus.jsonl.gz, got both", beir, tmp_path)
    (tmp_path / "corpus.jsonl").unlink()
    (tmp_path / "corpus.jsonl.gz").unlink()
    raises_at(str(tmp_path), "got neither", beir, tmp_path)
    write_beir(tmp_path)
    raises_at(str(tmp_path / "qrels" / "dev.tsv"), "got splits ['train']", lambda: beir(tmp_path, split="dev"))


def test_beir_truncated_gzip(tmp_path):
    write_beir(tmp_path, gz=True)
    blob = (tmp_path / "corpus.jsonl.gz").read_bytes()
    (tmp_path / "corpus.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(InputError, match=r"corpus\.jsonl\.gz.*expected a readable gzip file"):
        beir(tmp_path)


def test_beir_no_usable_pair(tmp_path):
    write_beir(tmp_path, qrels="q1\td1\t0\nq9\td1\t1\n")
    msg = raises_at(str(tmp_path / "qrels" / "train.tsv"), "expected at least one query", beir, tmp_path)
    assert "got none" in msg
    write_beir(tmp_path, qrels="")
    raises_at(str(tmp_path / "qrels" / "train.tsv"), "expected at least one query", beir, tmp_path)


def test_min_grade_must_be_positive():
    with pytest.raises(ValueError):
        BeirSource(path="/x", min_grade=0)


# -- BEIR: warnings -------------------------------------------------------------------------------


def test_beir_warnings_counted_and_items_dropped(tmp_path):
    corpus = [*CORPUS, {"_id": "d5", "title": " ", "text": ""}, {"_id": "d6", "text": "\n"}]
    queries = [*QUERIES, {"_id": "q5", "text": "   "}, {"_id": "q6", "text": ""}]
    qrels = (
        "q1\td1\t1\n"  # line 1
        "q1\td1\t2\n"  # 2 duplicate_qrel (first row wins)
        "qX\td1\t1\n"  # 3 qrels_unknown_query
        "q2\tdX\t1\n"  # 4 qrels_unknown_doc
        "q2\td2\t1\n"  # 5
        "q2\td5\t1\n"  # 6 empty_positive (q2 keeps d2)
        "q2\td6\t0\n"  # 7 below min_grade: not a finding
        "q5\td3\t1\n"  # 8 empty_query (q5 has a positive but no text)
        "q6\td6\t1\n"  # 9 empty_positive; q6 then has no positive: not a run query, no empty_query
        "q2\tdY\t0\n"  # 10 qrels_unknown_doc, whatever the grade
    )
    data = beir(write_beir(tmp_path, corpus=corpus, queries=queries, qrels=qrels))
    assert data.corpus.ids == ["d1", "d2", "d3", "d4"]  # empty docs are left out of the corpus
    assert data.queries.ids == ["q1", "q2"]
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    assert dict(data.findings.counts) == {
        "empty_doc": 2,
        "duplicate_qrel": 1,
        "qrels_unknown_query": 1,
        "qrels_unknown_doc": 2,
        "empty_positive": 2,
        "empty_query": 1,
    }
    qrels_path = tmp_path / "qrels" / "train.tsv"
    assert data.findings.examples["empty_doc"] == [f"{tmp_path / 'corpus.jsonl'}:5", f"{tmp_path / 'corpus.jsonl'}:6"]
    assert data.findings.examples["duplicate_qrel"] == [f"{qrels_path}:2"]
    assert data.findings.examples["qrels_unknown_query"] == [f"{qrels_path}:3"]
    assert data.findings.examples["qrels_unknown_doc"] == [f"{qrels_path}:4", f"{qrels_path}:10"]
    assert data.findings.examples["empty_positive"] == [f"{qrels_path}:6", f"{qrels_path}:9"]
    assert data.findings.examples["empty_query"] == [f"{tmp_path / 'queries.jsonl'}:5"]


# -- JSONL pairs ----------------------------------------------------------------------------------

PAIRS = [
    {"anchor": "who wrote it?", "positive": "The author wrote it.", "extra": 1},
    {"anchor": "who wrote it?", "positive": "A second answer."},
    {"anchor": "where is it?", "positive": "The author wrote it."},
    {"anchor": " who wrote it? ", "positive": "The author wrote it."},  # duplicate after stripping
    {"anchor": "", "positive": "orphan"},
    {"anchor": "blank positive", "positive": "  "},
]


def test_jsonl_pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl(PAIRS))
    data = load_jsonl_pairs(JsonlPairsSource(path=str(path)))
    d_author, d_second = h16("d", "The author wrote it."), h16("d", "A second answer.")
    q_who, q_where = h16("q", "who wrote it?"), h16("q", "where is it?")
    assert data.corpus.ids == [d_author, d_second]
    assert data.corpus.texts == ["The author wrote it.", "A second answer."]
    assert data.queries.ids == [q_who, q_where] and data.queries.texts == ["who wrote it?", "where is it?"]
    assert data.qrels == {q_who: {d_author: 1, d_second: 1}, q_where: {d_author: 1}}
    assert dict(data.findings.counts) == {"duplicate_pair": 1, "empty_query": 1, "empty_positive": 1}
    assert data.findings.examples["duplicate_pair"] == [f"{path}:4"]
    assert data.findings.examples["empty_query"] == [f"{path}:5"]


def test_jsonl_pairs_field_names_and_extra_corpus(tmp_path):
    write_beir(tmp_path / "beir")
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl([{"q": "alpha?", "p": "Alpha first passage."}, {"q": "new?", "p": "brand new"}]))
    config = JsonlPairsSource(
        path=str(path), anchor_field="q", positive_field="p", corpus=str(tmp_path / "beir" / "corpus.jsonl")
    )
    data = load_source(config)
    assert data.corpus.ids == ["d1", "d2", "d3", "d4", h16("d", "brand new")]
    assert data.qrels == {h16("q", "alpha?"): {"d1": 1}, h16("q", "new?"): {h16("d", "brand new"): 1}}


@pytest.mark.parametrize(
    "line3, match",
    [
        (b'{"anchor": "a", "positive": "caf\xe9"}', "not UTF-8 (byte 0xe9 at column 33)"),
        (b'{"anchor": "a", "positive": "b"', "got invalid JSON"),
        (b'"just a string"', "expected a JSON object, got string"),
        (b'{"anchor": "a"}', 'expected string field "positive", got no such field'),
        (b'{"anchor": ["a"], "positive": "b"}', 'expected string field "anchor", got array'),
    ],
)
def test_jsonl_pairs_errors(tmp_path, line3, match):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_lines(b'{"anchor": "x", "positive": "y"}', b"", line3))
    raises_at(f"{path}:3", match, load_jsonl_pairs, JsonlPairsSource(path=str(path)))


def test_jsonl_pairs_nothing_usable(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl([{"anchor": " ", "positive": "y"}]))
    raises_at(
        str(path), "expected at least one (anchor, positive) pair", load_jsonl_pairs, JsonlPairsSource(path=str(path))
    )
    raises_at(
        str(tmp_path / "missing.jsonl"),
        "got nothing",
        load_jsonl_pairs,
        JsonlPairsSource(path=str(tmp_path / "missing.jsonl")),
    )


def test_jsonl_pairs_bad_extra_corpus(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(_jsonl(PAIRS[:1]))
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(_lines(GOOD[0], GOOD[0]))
    config = JsonlPairsSource(path=str(path), corpus=str(corpus))
    raises_at(f"{corpus}:2", 'duplicate "d1"', load_jsonl_pairs, config)


# -- Hugging Face pairs ---------------------------------------------------------------------------


def test_hf_pairs_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {
        "anchor": ["who wrote it?", "where is it?", "who wrote it?"],
        "positive": ["The author.", "Here.", "The author."],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    data = load_hf_pairs(HFPairsSource(path=str(tmp_path / "ds")))
    assert data.corpus.texts == ["The author.", "Here."]
    assert data.queries.ids == [h16("q", "who wrote it?"), h16("q", "where is it?")]
    assert dict(data.findings.counts) == {"duplicate_pair": 1}
    assert data.findings.examples["duplicate_pair"] == [f"{tmp_path / 'ds'}:row 2"]

    renamed = datasets.Dataset.from_dict({"query": ["q?"], "answer": ["Alpha first passage."]})
    datasets.DatasetDict({"validation": renamed}).save_to_disk(str(tmp_path / "dd"))
    write_beir(tmp_path / "beir")
    config = HFPairsSource(
        path=str(tmp_path / "dd"),
        split="validation",
        anchor_column="query",
        positive_column="answer",
        corpus=str(tmp_path / "beir" / "corpus.jsonl"),
    )
    data = load_source(config)
    assert data.qrels == {h16("q", "q?"): {"d1": 1}} and len(data.corpus) == 4


def test_hf_pairs_errors(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ds_path = tmp_path / "ds"
    datasets.Dataset.from_dict({"anchor": ["a", "b", "c"], "positive": ["x", None, "z"]}).save_to_disk(str(ds_path))
    raises_at(f"{ds_path}:row 1", 'column "positive", got null', load_hf_pairs, HFPairsSource(path=str(ds_path)))
    raises_at(str(ds_path), "missing ['pos']", load_hf_pairs, HFPairsSource(path=str(ds_path), positive_column="pos"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"anchor": ["a"], "positive": ["b"]})}).save_to_disk(
        str(tmp_path / "dd")
    )
    raises_at(
        str(tmp_path / "dd"),
        "got splits ['train']",
        load_hf_pairs,
        HFPairsSource(path=str(tmp_path / "dd"), split="test"),
    )
    (tmp_path / "empty").mkdir()
    raises_at(
        str(tmp_path / "empty"),
        "expected a folder written by save_to_disk",
        load_hf_pairs,
        HFPairsSource(path=str(tmp_path / "empty")),
    )
    raises_at(str(tmp_path / "gone"), "got nothing", load_hf_pairs, HFPairsSource(path=str(tmp_path / "gone")))

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/pairs' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as info:
        load_hf_pairs(HFPairsSource(path="someone/pairs"))
    msg = str(info.value)
    assert msg.startswith("someone/pairs: expected a Hugging Face Hub dataset") and "ConnectionError" in msg
    assert "\n" not in msg
