"""synth.formats: every layout of ``st.LAYOUTS`` builds rows that match its columns and save as a trainable
config; the run's Tevatron file reads back through relabel's reader and writes back byte for byte; the
BEIR export loads back as a ``beir`` source; relabel's input detection."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import DatasetDict, load_from_disk

from synth.core.errors import UserError
from synth.core.records import MINED, Corpus, Mined, Negative, Pairs, Queries
from synth.formats import FORMATS, export, export_kinds, read_input, write_output
from synth.formats.rows import PROVENANCE_COLUMNS, build_rows, grouped_by_query
from synth.formats.st import LAYOUTS, layout_configs, with_provenance
from synth.formats.beir import BeirSource, load_beir

N = 2


def _run():
    """Three pairs over two queries; pair 2 has one negative only (short for n-tuple), pair 1 was dropped."""
    corpus = Corpus(ids=["d0", "d1", "d2", "d3", "d4"], texts=["zero", "one", "two", "three", "four"])
    queries = Queries(ids=["q0", "q1"], texts=["query zero", "query one"])
    pairs = Pairs(
        query_ids=["q0", "q0", "q1"],
        positive_ids=["d0", "d1", "d2"],
        query_rows=np.array([0, 0, 1]),
        positive_rows=np.array([0, 1, 2]),
    )
    negatives = [
        [Negative("d3", "three", 0.5, MINED), Negative("d4", "four", 0.4, MINED)],
        None,
        [Negative("d3", "three", 0.3, MINED)],
    ]
    mined = Mined(
        negative_rows=np.array([[3, 4], [4, 3], [3, -1]]),
        negative_scores=np.array([[0.5, 0.4], [0.4, 0.5], [0.3, np.nan]], dtype=np.float32),
        positive_scores=np.array([0.9, 0.8, 0.7], dtype=np.float32),
        sampler="topk",
        seed=0,
    )
    return corpus, queries, pairs, mined, negatives


EXPECTED = {  # layout -> (rows of text values, negative ids per row, short pairs dropped)
    "n-tuple": ([["query zero", "zero", "three", "four"]], [["d3", "d4"]], 1),
    "triplet": (
        [["query zero", "zero", "three"], ["query zero", "zero", "four"], ["query one", "two", "three"]],
        [["d3"], ["d4"], ["d3"]],
        0,
    ),
    "labeled-pair": (
        [
            ["query zero", "zero", 1.0],
            ["query zero", "three", 0.0],
            ["query zero", "four", 0.0],
            ["query one", "two", 1.0],
            ["query one", "three", 0.0],
        ],
        [[], ["d3"], ["d4"], [], ["d3"]],
        0,
    ),
    "pairs": ([["query zero", "zero"], ["query one", "two"]], [[], []], 0),
}


def test_every_layout_is_declared_once_and_tested():
    assert list(LAYOUTS) == list(EXPECTED)
    assert len({v.config for v in LAYOUTS.values()}) == len(LAYOUTS)
    assert all("-" not in v.config for v in LAYOUTS.values())


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_layout_rows_match_their_columns_and_save_trainable(fmt, tmp_path):
    corpus, queries, pairs, mined, negatives = _run()
    cols, counts = build_rows(fmt, N, pairs, mined, corpus, queries, negatives=negatives)
    text = LAYOUTS[fmt].columns(N)
    assert list(cols) == text + PROVENANCE_COLUMNS
    rows, neg_ids, short = EXPECTED[fmt]
    assert [list(r) for r in zip(*(cols[c] for c in text))] == rows
    assert cols["negative_ids"] == neg_ids and counts["short_pairs_dropped"] == short
    assert counts["negatives"] == sum(map(len, neg_ids))
    assert cols["sampler"] == ["none" if not LAYOUTS[fmt].mines else "topk"] * len(rows)
    configs = layout_configs(LAYOUTS[fmt].config, cols, fmt, N)
    DatasetDict(configs).save_to_disk(str(tmp_path / "dd"))
    dd = load_from_disk(str(tmp_path / "dd"))
    assert dd[LAYOUTS[fmt].config].column_names == text  # only what the trainer takes
    joined = with_provenance(dd, LAYOUTS[fmt].config)
    assert joined["row_id"] == list(range(len(rows))) and joined["query_id"] == cols["query_id"]


def test_tevatron_export_reads_back_and_writes_back_the_same_bytes(tmp_path):
    corpus, queries, pairs, mined, negatives = _run()
    groups = grouped_by_query(pairs, corpus, queries, negatives, promoted=[("q1", "d3")])
    got = export("tevatron", groups, corpus, tmp_path)
    path = tmp_path / got["path"]
    assert got == {"path": "tevatron/train.jsonl", "format": "tevatron", "rows": 2, "positives": 3, "negatives": 2}
    inp = read_input(path)
    assert inp.kind == "tevatron"
    assert [
        (e.query_id, e.query, [(p.id, p.text) for p in e.positives], [(p.id, p.text) for p in e.negatives])
        for e in inp.examples
    ] == groups  # q1's promoted d3 is a positive, no longer a negative
    (tmp_path / "o").mkdir()
    write_output(inp, inp.examples, tmp_path / "o")  # policy "keep": the same file
    assert (tmp_path / "o" / "data.jsonl").read_bytes() == path.read_bytes()


def test_beir_export_loads_back_as_a_source(tmp_path):
    corpus, queries, pairs, mined, negatives = _run()
    got = export("beir", grouped_by_query(pairs, corpus, queries, negatives), corpus, tmp_path)
    assert got == {"path": "beir", "corpus": 5, "queries": 2, "qrels": 2}  # pair 1 (q0, d1) was dropped
    data = load_beir(BeirSource(path=str(tmp_path / "beir")))
    assert (data.corpus.ids, data.corpus.texts) == (corpus.ids, corpus.texts)
    assert data.queries.texts == queries.texts and data.qrels == {"q0": {"d0": 1}, "q1": {"d2": 1}}


def test_registry_and_input_detection(tmp_path):
    assert export_kinds() == ["tevatron", "beir"] and FORMATS["beir"].read is None
    with pytest.raises(UserError, match="no such file or folder"):
        read_input(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="no such file or folder"):
        read_input("./missing")
    corpus, queries, pairs, mined, negatives = _run()
    cols, _ = build_rows("triplet", N, pairs, mined, corpus, queries, negatives=negatives)
    DatasetDict(layout_configs("triplets", cols, "triplet", N)).save_to_disk(str(tmp_path / "run"))
    inp = read_input(tmp_path / "run")  # a run's own output: rows joined with their provenance config
    assert (inp.kind, inp.layout, inp.n) == ("hf", "triplet", 1)
    assert [e.query_id for e in inp.examples] == ["q0", "q1"] and not math.isnan(inp.scores[("q0", "d3")])
