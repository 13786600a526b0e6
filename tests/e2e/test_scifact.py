"""End to end on the real SciFact train split (skipped when ../shared/data is absent): every train query and
pair, over a corpus cut to its first 2,048 passages plus every train positive (2,340 of 5,183;
tests/support/subsets.py: head_and_positives). What is checked is the whole query set going through and
ReSa2's pools over a real ranking; the acceptance probes (tests/e2e/test_clean_hard_negatives.py) are the
whole-collection runs (NPL: 11,426 passages).

Passages are embedded at 128 tokens, the main recipe's length, not resa2.yaml's 256: SciFact's abstracts
(median 316 tokens) cost 2.5 times as much at 256 on CI's two cores. tests/integration/test_index_ann.py reads
the same embedding from the session's cache."""

from __future__ import annotations

import json

from datasets import load_from_disk

from synth.formats.st import with_provenance
from synth.sources import load_source
from synth.formats.beir import BeirSource
from tests.conftest import REPO, shared_dataset


def test_resa2_on_scifact_train(synth_cli, scifact_head, tmp_path):
    scifact = shared_dataset("scifact")
    out = tmp_path / "scifact"
    synth_cli(
        "run",
        str(REPO / "recipes" / "resa2.yaml"),
        "--out",
        str(out),
        "--set",
        f"source.path={scifact_head}",
        "--set",
        "embed.max_seq_length=128",
        "--set",
        "mine.sampler.k1=1000",
        "--set",
        "mine.sampler.k1_prime=500",
        "--set",
        "mine.sampler.k2=75",
        check=True,
    )
    report = json.loads((out / "report.json").read_text())
    assert report["stages"]["load"]["rows"] == 919 and report["stages"]["load"]["corpus"] == 2340
    assert report["mining"]["short_pairs"] == 0
    ds = with_provenance(load_from_disk(str(out / "dataset")), "triplets")
    assert len(ds) == 919
    qrels = load_source(BeirSource(path=str(scifact), split="train")).qrels
    for qid, negs in zip(ds["query_id"], ds["negative_ids"]):
        assert not set(qrels[qid]) & set(negs)
    # ReSa2's negatives are hard but not the very top: their scores sit below the positives on average.
    assert report["scores"]["positive_minus_negative"]["mean"] > 0
