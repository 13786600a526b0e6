"""Source loaders on real data: the shared BEIR sets (skipped, with the path, when ../shared/data lacks them)
and the bundled scifact-mini example. Input checks on crafted files are in tests/unit/test_sources.py."""

from __future__ import annotations

from pathlib import Path

from synth.sources import load_source
from synth.formats.beir import BeirSource
from tests.conftest import EXAMPLE, shared_dataset


def beir(root: Path, **kw):
    return load_source(BeirSource(path=str(root), **kw))


def test_real_scifact_train():
    data = beir(shared_dataset("scifact"), split="train")
    assert len(data.corpus) == 5183
    assert len(data.queries) == 809
    assert sum(len(p) for p in data.qrels.values()) == 919
    assert data.findings.counts == {}


def test_real_cranfield_test():
    cranfield = shared_dataset("cranfield")
    data = beir(cranfield, split="test")
    assert dict(data.findings.counts) == {"empty_doc": 2, "empty_positive": 1}
    assert "471" not in data.corpus.row_of and "995" not in data.corpus.row_of and len(data.corpus) == 1398
    assert len(data.queries) == 225
    assert "995" not in data.qrels["125"] and len(data.qrels["125"]) == 16
    assert sum(len(p) for p in data.qrels.values()) == 1611
    assert data.findings.examples["empty_positive"][0].startswith(str(cranfield / "qrels" / "test.tsv") + ":")


def test_example_scifact_mini_loads_cleanly():
    data = beir(EXAMPLE, split="train")
    assert data.findings.counts == {}
    assert (len(data.corpus), len(data.queries), sum(len(p) for p in data.qrels.values())) == (1200, 150, 171)
