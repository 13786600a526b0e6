"""No silently wrong training data (issue 23): every way a label used to be corrupted without a word is now
either an error naming the row or handled and counted. Crafted inputs, the real readers and the real miner."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import numpy as np
import pytest
from datasets import Dataset

import synth
from synth.core.checks import iter_lines
from synth.core.errors import InputError, UserError
from synth.core.records import Corpus, Queries, SourceData
from synth.core.text import normal_text
from synth.formats import read_input, write_output
from synth.formats.hf import read_hf
from synth.core.text import near_duplicate_key
from synth.mine import excluded_rows_per_query
from synth.sources.hf import HFPairsSource, load_hf_pairs
from synth.sources.jsonl import JsonlPairsSource, load_jsonl_pairs
from tests.support.mining import mine_topk
from tests.support.runs import RESA2_RECIPE


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# -- mining: a copy of a positive is never its query's negative ---------------------------------------------

POSITIVE = "Aspirin lowers the risk of stroke in adults."


def _copies_world():
    """Query q0's positive d1, an exact copy of it (d5: other case and spacing), a near-duplicate (d6: other
    punctuation), and a passage that merely shares most words (d7, a real negative); the three rank first."""
    texts = [f"unrelated passage number {i}" for i in range(40)]
    texts[1] = POSITIVE
    texts[5] = "ASPIRIN  lowers the risk of\nstroke in adults."
    texts[6] = "Aspirin lowers the risk of stroke, in adults"
    texts[7] = "Aspirin lowers the risk of stroke in children."
    data = SourceData(
        Corpus([f"d{i}" for i in range(40)], texts),
        Queries(["q0", "q1"], ["does aspirin prevent stroke", "something else"]),
        {"q0": {"d1": 1}, "q1": {"d2": 1}},
    )
    rng = np.random.default_rng(0)
    corpus_emb = _unit(rng.normal(size=(40, 8)))
    query_emb = _unit(np.stack([corpus_emb[1], corpus_emb[2]]))
    for row in (5, 6, 7):  # the copies score as high as the positive: a hard-negative miner's first pick
        corpus_emb[row] = _unit(corpus_emb[1] + 0.01 * row * rng.normal(size=8)[None])[0]
    return data, corpus_emb, query_emb


def test_near_duplicate_key_holds_every_exact_copy_and_only_differences_of_form():
    pairs = [("Hello  World", "hello world"), ("Ḱelvin ﬁne", "ḱelvin  ﬁne"), ("Straße", "STRASSE")]
    for a, b in pairs:
        assert normal_text(a) == normal_text(b)
        assert near_duplicate_key(a) == near_duplicate_key(b)
    assert near_duplicate_key("Hello, world!") == near_duplicate_key("hello world")
    assert near_duplicate_key("ﬁne") == near_duplicate_key("fine")  # a compatibility ligature
    assert near_duplicate_key("hello world") != near_duplicate_key("hello worlds")


def test_exact_copies_and_near_duplicates_of_a_positive_are_excluded_and_counted():
    data, _, _ = _copies_world()
    counts: dict[str, int] = {}
    excluded = excluded_rows_per_query(data, True, counts)
    assert excluded[0].tolist() == [1, 5, 6]  # d7 differs in a word: a legitimate hard negative
    assert excluded[1].tolist() == [2]
    assert counts == {"positive_copies": 1, "positive_near_duplicates": 1}


@pytest.mark.parametrize("with_backfill", [False, True])
def test_the_miner_never_returns_a_copy_of_the_positive_and_reports_the_count(with_backfill):
    data, corpus_emb, query_emb = _copies_world()
    mined, stats = mine_topk(data, corpus_emb, query_emb, range_max=40, with_backfill=with_backfill)
    picked = set(mined.negative_rows[0].tolist())
    assert not picked & {1, 5, 6}
    assert 7 in picked  # the hardest real negative is still mined
    assert (stats.positive_copies, stats.positive_near_duplicates) == (1, 1)
    assert stats.as_dict()["positive_copies"] == 1


# -- synth relabel on Tevatron input ------------------------------------------------------------------------


def _tevatron(tmp_path, *lines) -> str:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _passage(docid, text, title=""):
    return {"docid": docid, "title": title, "text": text}


def test_tevatron_negative_reusing_the_positive_docid_with_another_text_is_an_error_naming_the_row(tmp_path):
    path = _tevatron(
        tmp_path,
        {"query_id": "q0", "query": "q", "positive_passages": [_passage("7", "a")], "negative_passages": []},
        {
            "query_id": "q1",
            "query": "q",
            "positive_passages": [_passage("7", "the answer")],
            "negative_passages": [_passage("8", "other"), _passage("7", "a different passage")],
        },
    )
    with pytest.raises(InputError) as err:
        read_input(path)
    message = str(err.value)
    assert f"{path}:2:" in message
    assert "negative_passages[1]" in message and "positive_passages[0]" in message and '"7"' in message


def test_tevatron_negative_equal_to_the_positive_is_dropped_counted_and_never_written(tmp_path):
    path = _tevatron(
        tmp_path,
        {
            "query_id": "q0",
            "query": "q",
            "positive_passages": [_passage("7", "the answer")],
            "negative_passages": [_passage("7", "the answer"), _passage("8", "other")],
        },
    )
    inp = read_input(path)
    assert [p.id for p in inp.examples[0].negatives] == ["8"]
    assert inp.summary()["dropped"] == {"negatives_equal_to_positive": 1}
    write_output(inp, inp.examples, tmp_path)
    written = json.loads((tmp_path / "data.jsonl").read_text(encoding="utf-8"))
    assert written["negative_passages"] == [_passage("8", "other")]
    assert written["positive_passages"] == [_passage("7", "the answer")]


def test_tevatron_docids_1_and_string_1_are_one_id_an_error_naming_both(tmp_path):
    path = _tevatron(
        tmp_path,
        {
            "query_id": "q0",
            "query": "q",
            "positive_passages": [_passage(1, "one")],
            "negative_passages": [_passage("1", "one")],
        },
    )
    with pytest.raises(InputError, match=r'negative_passages\[0\]: docid "1" \(a string\) and positive_passages'):
        read_input(path)


def test_tevatron_query_ids_1_and_string_1_name_both_lines(tmp_path):
    line = {"query": "q", "positive_passages": [_passage("d", "t")], "negative_passages": []}
    path = _tevatron(tmp_path, {"query_id": 1, **line}, {"query_id": "1", **line})
    with pytest.raises(InputError, match=r':2: query_id "1" appears twice \(first as 1 on line 1\)'):
        read_input(path)


# -- synth relabel on a saved dataset -----------------------------------------------------------------------


def _rows(**overrides):
    rows = {
        "anchor": ["what is x", "what is x"],
        "positive": ["x is a letter", "x is a letter"],
        "negative": ["y is a letter", "z is a letter"],
        "query_id": ["q1", "q1"],
        "positive_id": ["d1", "d1"],
        "negative_ids": [["d2"], ["d3"]],
    }
    return Dataset.from_dict({**rows, **overrides})


def test_saved_dataset_query_id_with_two_anchors_is_an_error_naming_both_rows():
    ds = _rows(anchor=["what is x", "what is y"])
    with pytest.raises(InputError, match=r'ds:row 1: query_id "q1" has a different anchor than on row 0'):
        read_hf("ds", ds)
    assert [e.query for e in read_hf("ds", _rows()).examples] == ["what is x"]


def test_saved_dataset_passage_id_with_two_texts_is_an_error_naming_both_rows():
    ds = _rows(negative_ids=[["d2"], ["d2"]])
    with pytest.raises(InputError, match=r'ds:row 1: negative_ids "d2" has a different text than on row 0'):
        read_hf("ds", ds)


def test_saved_dataset_negative_that_is_a_positive_is_dropped_and_counted():
    ds = _rows(negative=["y is a letter", "x is a letter"], negative_ids=[["d2"], ["d1"]])
    inp = read_hf("ds", ds)
    assert [p.id for p in inp.examples[0].negatives] == ["d2"]
    assert inp.dropped == {"negatives_equal_to_positive": 1}


# -- pairs input with negatives -----------------------------------------------------------------------------


def test_pairs_jsonl_with_a_negative_field_is_refused_at_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        '{"anchor": "a", "positive": "b"}\n{"anchor": "c", "positive": "d", "negative": "e"}\n', encoding="utf-8"
    )
    with pytest.raises(InputError, match=rf'^{path}:2: expected \(anchor, positive\) pairs, got field "negative"'):
        load_jsonl_pairs(JsonlPairsSource(path=str(path)))


def test_hf_pairs_with_a_negative_column_is_refused(tmp_path):
    Dataset.from_dict({"anchor": ["a"], "positive": ["b"], "negative_1": ["c"]}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(InputError, match='got field "negative_1".*synth relabel'):
        load_hf_pairs(HFPairsSource(path=str(tmp_path / "ds")))


# -- a Recipe object edited after loading -------------------------------------------------------------------


def test_an_edited_recipe_object_is_validated_again_before_a_run_or_a_plan(tmp_path):
    recipe = synth.load_recipe(RESA2_RECIPE)
    recipe.mine.n_negatives = 0  # assignment skips pydantic's checks
    with pytest.raises(UserError, match=r"mine\.n_negatives"):
        synth.plan(recipe)
    with pytest.raises(UserError, match=r"mine\.n_negatives"):
        synth.run(recipe, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    recipe.mine.n_negatives = "many"
    with pytest.raises(UserError, match=r"mine\.n_negatives"):
        synth.load_recipe(recipe)


def test_an_unedited_recipe_object_reads_back_the_same_with_its_defaults_still_defaults():
    recipe = synth.load_recipe(RESA2_RECIPE)
    again = synth.load_recipe(recipe)
    assert again.model_dump() == recipe.model_dump()
    assert again.mine.sampler.model_fields_set == recipe.mine.sampler.model_fields_set
    assert "backfill_depth" not in again.mine.model_fields_set  # a default stays a default (no clamp notice)


# -- line readers: a bound on one line, without reading it whole --------------------------------------------


def test_a_huge_line_in_a_small_gzip_stops_at_its_line_in_bounded_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_LINE_BYTES", str(1 << 20))
    path = tmp_path / "corpus.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"_id": "a", "text": "short"}\n')
        chunk = b"x" * (1 << 20)
        f.write(b'{"_id": "b", "text": "')
        for _ in range(256):  # a 256 MiB line, a few hundred KiB compressed
            f.write(chunk)
        f.write(b'"}\n')
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(UserError) as err:
            list(iter_lines(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(err.value).startswith(f"{path}:2: larger than the limit")
    assert "SYNTH_MAX_LINE_BYTES" in str(err.value)
    assert peak < 16 << 20, f"read {peak:,} bytes for a line bounded at 1 MiB"


def test_a_line_at_the_bound_is_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_LINE_BYTES", "10")
    path = tmp_path / "q.tsv"
    path.write_bytes(b"0123456789\nabc\n")
    assert list(iter_lines(path)) == [(1, "0123456789"), (2, "abc")]
    path.write_bytes(b"abc\n0123456789A\n")
    with pytest.raises(UserError, match=rf"^{path}:2: larger than the limit .* 10 bytes; set SYNTH_MAX_LINE_BYTES"):
        list(iter_lines(path))
    path.write_bytes(b"0123456789A")  # no final newline
    with pytest.raises(UserError, match=rf"^{path}:1: "):
        list(iter_lines(path))
