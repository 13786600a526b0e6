"""Zero-label (issue 24): the ``corpus`` source from every file kind, chunking, query-type quotas,
per-document caps, and the miner's rules for a corpus without labels (a document is never its own query's
negative, nor is a duplicate document or another chunk of it). Crafted data; no model is loaded."""

from __future__ import annotations

import gzip
import json
from collections import Counter

import numpy as np
import pytest

from synth.core.errors import InputError
from synth.core.records import Corpus, Queries, SourceData
from synth.generate.config import SyntheticQueriesConfig
from synth.generate.queries import plan_queries
from synth.generate.quotas import hold_quotas, quota_targets
from synth.generate.records import Persona
from synth.mine import excluded_rows_per_query
from synth.sources import load_source
from synth.sources.corpus import CorpusSource, chunk_spans, load_corpus
from tests.support.mining import mine_topk

DOCS = [
    {"_id": "a", "title": "Alpha", "text": "first document about alpha."},
    {"_id": "b", "title": None, "text": "second document, no title."},
    {"_id": "c", "title": "", "text": "  third document.  "},
]


def _jsonl(path, rows, gz=False):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _check_docs(data: SourceData, ids=("a", "b", "c")):
    assert data.corpus.ids == list(ids)
    assert data.corpus.texts == ["Alpha first document about alpha.", "second document, no title.", "third document."]
    assert data.corpus.doc_ids == list(ids) and data.corpus.offsets == [0, 0, 0]
    assert (data.queries.ids, data.queries.texts, data.qrels) == ([], [], {})


# -- the source, from each file kind ----------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_beir_corpus_file_and_folder(tmp_path, gz):
    path = _jsonl(tmp_path / ("corpus.jsonl.gz" if gz else "corpus.jsonl"), DOCS, gz)
    _check_docs(load_corpus(CorpusSource(path=str(path))))
    _check_docs(load_source(CorpusSource(path=str(tmp_path))))  # a BEIR folder: its corpus only


def test_jsonl_with_custom_field_names(tmp_path):
    rows = [{"doc": d["_id"], "head": d["title"], "body": d["text"]} for d in DOCS]
    path = _jsonl(tmp_path / "docs.jsonl", rows)
    cfg = CorpusSource(path=str(path), id_field="doc", title_field="head", text_field="body")
    _check_docs(load_corpus(cfg))
    with pytest.raises(InputError, match=r'docs\.jsonl:1: expected string field "_id"'):
        load_corpus(CorpusSource(path=str(path)))


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.Table.from_pylist(DOCS), path)
    _check_docs(load_corpus(CorpusSource(path=str(path))))
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"_id": "a", "text": "x"}, {"_id": "b", "text": None}]), bad)
    with pytest.raises(InputError, match=r'bad\.parquet:row 1: expected a non-empty string in column "text", got null'):
        load_corpus(CorpusSource(path=str(bad), title_field=None))


def test_folder_of_txt_and_md(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "guide.md").write_text("intro line\n\n# Install guide\n\nRun the installer.\n")
    (tmp_path / "notes.txt").write_text("Plain notes.\r\nSecond line.\n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    data = load_corpus(CorpusSource(path=str(tmp_path)))
    assert data.corpus.ids == ["notes.txt", "sub/guide.md"]
    assert data.corpus.texts == ["notes Plain notes.\nSecond line.", "Install guide intro line\nRun the installer."]
    (tmp_path / "bad.txt").write_bytes(b"ok\nbad \xff byte\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: not UTF-8"):
        load_corpus(CorpusSource(path=str(tmp_path)))


def test_local_hf_dataset(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(DOCS).save_to_disk(str(tmp_path / "ds"))
    _check_docs(load_corpus(CorpusSource(path=str(tmp_path / "ds"))))
    DatasetDict({"corpus": Dataset.from_list(DOCS)}).save_to_disk(str(tmp_path / "dd"))
    _check_docs(load_corpus(CorpusSource(path=str(tmp_path / "dd"), split="corpus")))
    with pytest.raises(InputError, match=r"expected split 'train', got splits \['corpus'\]"):
        load_corpus(CorpusSource(path=str(tmp_path / "dd")))


def test_the_input_checks_apply(tmp_path):
    dup = _jsonl(tmp_path / "dup.jsonl", [DOCS[0], DOCS[1], DOCS[0]])
    with pytest.raises(
        InputError, match=r'dup\.jsonl:3: expected a unique document id, got duplicate "a" \(first on line 1\)'
    ):
        load_corpus(CorpusSource(path=str(dup)))
    nul = tmp_path / "nul.jsonl"
    nul.write_bytes(b'{"_id": "a", "text": "x\x00"}\n')
    with pytest.raises(InputError, match=r"nul\.jsonl:1: expected text, got a NUL byte"):
        load_corpus(CorpusSource(path=str(nul)))
    empty = _jsonl(tmp_path / "empty.jsonl", [{"_id": "a", "text": " "}, DOCS[1]])
    data = load_corpus(CorpusSource(path=str(empty)))
    assert data.corpus.ids == ["b"] and data.findings.counts["empty_doc"] == 1
    none = _jsonl(tmp_path / "none.jsonl", [{"_id": "a", "text": " "}])
    with pytest.raises(InputError, match="expected at least one document"):
        load_corpus(CorpusSource(path=str(none)))


def test_a_line_over_the_line_cap_is_refused(tmp_path, monkeypatch):
    from synth.core.errors import UserError

    monkeypatch.setenv("SYNTH_MAX_LINE_BYTES", "100")
    path = _jsonl(tmp_path / "long.jsonl", [DOCS[0], {"_id": "x", "text": "y" * 200}])
    with pytest.raises(UserError, match=r"long\.jsonl:2.*SYNTH_MAX_LINE_BYTES"):
        load_corpus(CorpusSource(path=str(path)))


# -- chunking ---------------------------------------------------------------------------------------------


def test_chunks_keep_their_document_id_and_offset(tmp_path):
    words = [f"w{i}" for i in range(25)]
    long_text = " ".join(words[:10]) + "\n\n  " + " ".join(words[10:])
    path = _jsonl(tmp_path / "docs.jsonl", [{"_id": "long", "title": "T", "text": long_text}, DOCS[1]])
    data = load_corpus(CorpusSource(path=str(path), chunk={"max_tokens": 8, "overlap": 3}))
    c = data.corpus
    passage = "T " + long_text.strip()
    assert c.ids == ["long#c0", "long#c1", "long#c2", "long#c3", "long#c4", "b"]
    assert c.doc_ids == ["long"] * 5 + ["b"]
    for text, offset in zip(c.texts[:5], c.offsets[:5]):
        assert passage[offset : offset + len(text)] == text  # the chunk is the document's text at its offset
        assert len(text.split()) <= 8 and text == text.strip()
    assert c.texts[0].split() == ["T"] + words[:7] and c.texts[-2].split()[-1] == "w24"
    assert c.texts[1].split()[:3] == c.texts[0].split()[-3:]  # consecutive chunks share `overlap` words
    assert c.document_of(2) == "long" and c.offsets[5] == 0 and c.ids[5] == "b"  # a short document stays whole
    assert chunk_spans("a b", 8, 3) == [(0, 3)]


def test_a_chunk_id_that_clashes_with_a_document_id_is_an_error(tmp_path):
    rows = [{"_id": "x", "text": "one two three four five"}, {"_id": "x#c1", "text": "other"}]
    path = _jsonl(tmp_path / "docs.jsonl", rows)
    with pytest.raises(InputError, match=r"expected chunk id 'x#c1' to be free"):
        load_corpus(CorpusSource(path=str(path), chunk={"max_tokens": 3, "overlap": 1}))


# -- quotas and caps --------------------------------------------------------------------------------------


def _chunked_corpus(n_docs=30, chunks_of_first=12) -> Corpus:
    ids, texts, doc_ids = [], [], []
    for d in range(n_docs):
        k = chunks_of_first if d == 0 else 1
        for c in range(k):
            ids.append(f"d{d}#c{c}" if k > 1 else f"d{d}")
            texts.append(f"text {d} {c}")
            doc_ids.append(f"d{d}")
    return Corpus(ids, texts, doc_ids, [0] * len(ids))


def _persona(i):
    return Persona(f"p{i}", f"persona {i}", "starter", "s")


def test_quota_targets_are_exact_up_to_rounding():
    shares = {"question": 0.5, "keyword": 0.3, "long": 0.2}
    for total in range(0, 50):
        t = quota_targets(shares, total)
        assert sum(t.values()) == total
        assert all(abs(t[k] - shares[k] * total) < 1 for k in shares)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_planned_types_hold_their_quotas(seed):
    shares = {"question": 0.5, "keyword": 0.25, "long-tail": 0.25}
    cfg = SyntheticQueriesConfig(docs=27, type_quotas=shares, personas_per_doc=2)
    items = plan_queries(cfg, _chunked_corpus(), [_persona(i) for i in range(5)], seed)
    counts = Counter(it.query_type for it in items)
    assert len(items) == 54 and counts == quota_targets(shares, 54)
    assert len({it.id for it in items}) == len(items)
    assert plan_queries(cfg, _chunked_corpus(), [_persona(i) for i in range(5)], seed) == items  # seeded


def test_kept_queries_hold_their_quotas_after_the_filters():
    shares = {"question": 0.5, "keyword": 0.5}
    types = ["question"] * 9 + ["keyword"] * 4 + ["long"]
    ids = [f"q{i}" for i in range(len(types))]
    keep = hold_quotas(ids, types, shares, 0)
    kept = Counter(t for t, k in zip(types, keep) if k)
    assert kept == {"question": 4, "keyword": 4}
    assert keep == hold_quotas(ids, types, shares, 0)
    few = ["question"] * 3 + ["keyword"] * 2
    assert Counter(t for t, k in zip(few, hold_quotas(ids[:5], few, shares, 0)) if k) == {"question": 2, "keyword": 2}


def test_per_document_cap_holds_and_the_sample_walks_on():
    corpus = _chunked_corpus(n_docs=30, chunks_of_first=40)
    cfg = SyntheticQueriesConfig(docs=20, types_per_doc=2, query_types=["question", "keyword"], max_queries_per_doc=3)
    items = plan_queries(cfg, corpus, [], 0)
    per_doc = Counter(corpus.document_of(corpus.row_of[it.doc_id]) for it in items)
    assert max(per_doc.values()) <= 3
    assert len({it.doc_id for it in items}) == 20  # 20 chunks sampled despite the cap
    uncapped = plan_queries(cfg.model_copy(update={"max_queries_per_doc": None}), corpus, [], 0)
    assert Counter(corpus.document_of(corpus.row_of[it.doc_id]) for it in uncapped)["d0"] > 3


def test_without_quotas_and_caps_the_plan_is_unchanged():
    corpus = Corpus([f"d{i}" for i in range(50)], [f"t{i}" for i in range(50)])
    cfg = SyntheticQueriesConfig(docs=10, types_per_doc=2)
    items = plan_queries(cfg, corpus, [_persona(i) for i in range(4)], 3)
    assert len(items) == 20 and len({it.doc_id for it in items}) == 10


def test_quota_config_is_checked():
    with pytest.raises(ValueError, match="summing to 1"):
        SyntheticQueriesConfig(type_quotas={"question": 0.5, "keyword": 0.2})
    with pytest.raises(ValueError, match="types_per_doc: 1"):
        SyntheticQueriesConfig(type_quotas={"question": 1.0}, types_per_doc=2)


# -- mining without labels -------------------------------------------------------------------------------


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _zero_label_world():
    """Synthetic query s0 written from chunk "big#c0"; "big" has two more chunks; "twin" is the same text as
    "big" under another id, chunked the same way; "near" shares most words. All rank right after the positive."""
    rng = np.random.default_rng(0)
    ids = ["big#c0", "big#c1", "big#c2", "twin#c0", "twin#c1", "twin#c2", "near"] + [f"o{i}" for i in range(30)]
    doc_ids = ["big"] * 3 + ["twin"] * 3 + ["near"] + [f"o{i}" for i in range(30)]
    chunk = ["Aspirin lowers stroke risk.", "It also thins blood.", "Doses vary by age."]
    texts = chunk + chunk + ["Aspirin lowers stroke risk in mice."] + [f"other passage {i}" for i in range(30)]
    corpus = Corpus(ids, texts, doc_ids, [0, 28, 49] * 2 + [0] * 31)
    data = SourceData(corpus, Queries(["s0"], ["does aspirin lower stroke risk"]), {"s0": {"big#c0": 1}})
    corpus_emb = _unit(rng.normal(size=(len(ids), 8)))
    for row in range(1, 7):
        corpus_emb[row] = _unit(corpus_emb[0] + 0.01 * row * rng.normal(size=8)[None])[0]
    return data, corpus_emb, _unit(corpus_emb[[0]].copy())


def test_no_chunk_of_the_query_document_or_of_its_twin_is_excluded_wrongly_or_mined():
    data, _, _ = _zero_label_world()
    counts: dict[str, int] = {}
    excluded = excluded_rows_per_query(data, True, counts)
    # own chunk, its document's other chunks, the twin's copy of the chunk and the twin's other chunks
    assert excluded[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert counts["positive_copies"] == 1 and counts["same_document_chunks"] == 4


@pytest.mark.parametrize("with_backfill", [False, True])
def test_the_miner_never_picks_the_query_document_or_a_duplicate_of_it(with_backfill):
    data, corpus_emb, query_emb = _zero_label_world()
    mined, stats = mine_topk(data, corpus_emb, query_emb, range_max=30, with_backfill=with_backfill)
    picked = [data.corpus.ids[r] for r in mined.negative_rows[0].tolist() if r >= 0]
    assert len(picked) == 3 and not {data.corpus.document_of(data.corpus.row_of[p]) for p in picked} & {"big", "twin"}
    assert "near" in picked  # a different text is still a hard negative
    assert stats.as_dict()["extra"]["same_document_chunks"] == 4


def test_a_duplicate_document_is_not_mined_as_its_twins_negative_unchunked():
    texts = ["The same text.", "the  SAME text", "different"] + [f"x{i}" for i in range(10)]
    ids = ["doc", "twin", "other"] + [f"x{i}" for i in range(10)]
    data = SourceData(Corpus(ids, texts, list(ids), [0] * len(ids)), Queries(["s"], ["same?"]), {"s": {"doc": 1}})
    assert 1 in excluded_rows_per_query(data, True)[0].tolist()


# -- the LLM quality judge --------------------------------------------------------------------------------


class _Judge:
    """A client that answers keep / drop / garbage / a failure, by the query text's first word."""

    model = "fake-judge"
    identity = {"model": "fake-judge"}

    def __init__(self):
        self.stages = []

    def complete(self, stage, requests):
        from synth.llm.base import ChatResponse

        self.stages.append(stage)
        out = []
        for req in requests:
            user = req.messages[-1][1]
            if "keepme" in user:
                out.append(ChatResponse(text='{"keep": true}', parsed={"keep": True}))
            elif "dropme" in user:
                out.append(ChatResponse(text='{"keep": false}', parsed={"keep": False}))
            elif "garbage" in user:
                out.append(ChatResponse(text='{"keep": "yes"}', parsed={"keep": "yes"}))
            else:
                out.append(ChatResponse(text=None, error="length"))
        return out


def test_quality_judge_keeps_only_a_keep_and_fails_closed():
    from pathlib import Path

    from synth.generate.config import QualityJudgeConfig
    from synth.generate.quality import judge_queries
    from synth.generate.records import SyntheticQuery
    from synth.llm.prompts import PromptLibrary

    corpus = Corpus(["d"], ["a document"], ["d"], [0])
    queries = [
        SyntheticQuery(f"sq{i}", f"{word} query", "d", "", "question", "m", "p", "h", i, "k")
        for i, word in enumerate(["keepme", "dropme", "garbage", "timeout"])
    ]
    client = _Judge()
    judged, report = judge_queries(QualityJudgeConfig(), queries, corpus, client, PromptLibrary([]), 0)
    assert [q.quality for q in judged] == ["keep", "drop", "failed", "failed"]
    assert report["verdicts"] == {"keep": 1, "drop": 1, "failed": 2} and client.stages == ["query_quality"]
    assert report["prompt"] == "query_quality" and len(report["prompt_sha256"]) == 64
    assert Path(__file__).resolve().parents[2].joinpath("prompts", "query_quality.schema.json").is_file()


def test_filter_stage_drops_what_the_judge_did_not_keep_then_holds_the_quotas():
    from types import SimpleNamespace

    from synth.generate.records import SyntheticQuery
    from synth.pipeline.stages.filter_queries import filter_candidates
    from synth.pipeline.synthetic_rows import query_provenance

    corpus = Corpus([f"d{i}#c0" for i in range(12)], [f"t{i}" for i in range(12)], [f"d{i}" for i in range(12)])
    corpus.offsets = [0] * 12
    verdicts = ["keep"] * 9 + ["drop", "failed", "keep"]
    types = ["question"] * 7 + ["keyword"] * 5
    candidates = [
        SyntheticQuery(f"sq{i}", f"query number {i}", f"d{i}#c0", "", t, "m", "p", "h", i, "k", v)
        for i, (t, v) in enumerate(zip(types, verdicts))
    ]
    cfg = SyntheticQueriesConfig(
        type_quotas={"question": 0.5, "keyword": 0.5},
        quality_judge={},
        filters={"near_dup_threshold": None, "round_trip_k": None},
    )
    recipe = SimpleNamespace(synthetic_queries=cfg, seed=0, index=SimpleNamespace(query_block=8))
    data = SourceData(corpus, Queries([], []), {})
    kept, dropped_by, rep = filter_candidates(recipe, data, candidates, None, None, None)
    assert rep["dropped"]["quality_judge"] == 2 and list(rep["dropped"])[0] == "quality_judge"
    assert rep["kept_by_type"] == {"keyword": 3, "question": 3} and rep["dropped"]["quota"] == 4
    assert rep["candidates"] == 12 and rep["kept"] == len(kept) == 6
    assert {dropped_by[q.id] for q in candidates if q.quality != "keep"} == {"quality_judge"}
    prov = query_provenance(kept, corpus)
    assert all(p["query_quality"] == "keep" and p["source_doc_id"].startswith("d") for p in prov.values())


def test_a_corpus_recipe_needs_synthetic_queries_and_resolves_any_corpus_path(tmp_path):
    from synth.core.errors import UserError
    from synth.recipe import load_recipe
    from tests.conftest import REPO

    recipe = REPO / "recipes" / "zero_label.yaml"
    with pytest.raises(UserError, match="synthetic_queries: required by source kind 'corpus'"):
        load_recipe(recipe, ["synthetic_queries=null"])
    docs = _jsonl(tmp_path / "docs.jsonl", DOCS)
    r = load_recipe(recipe, [f"source.path={docs}"])
    assert r.source.path == str(docs) and r.source.chunk is not None
    with pytest.raises(UserError, match=r"source\.path: no such file or directory"):
        load_recipe(recipe, [f"source.path={tmp_path / 'missing.jsonl'}"])


def test_a_hub_id_is_read_from_the_local_cache_only(monkeypatch):
    import os

    from synth.core.errors import UserError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(
        UserError, match=r"^no-such-org/no-such-corpus: expected a Hugging Face dataset in the local cache"
    ):
        load_corpus(CorpusSource(path="no-such-org/no-such-corpus"))
    assert "HF_HUB_OFFLINE" not in os.environ  # put back as it was
