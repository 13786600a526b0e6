"""On the same embeddings, synth's top-k negatives equal sentence-transformers' ``mine_hard_negatives``."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import mine_hard_negatives

from synth.embed import BUNDLED_MODEL, Encoder, embed_texts, resolve_model_path
from synth.evaluate.st_cache import st_prepopulate
from synth.index import Searcher
from synth.mine import build_pairs, mine
from synth.recipe import MineConfig
from synth.sources import load_source
from synth.formats.beir import BeirSource
from tests.conftest import EXAMPLE


@pytest.mark.slow  # embeds the example corpus, then mines it twice
@pytest.mark.parametrize("depth", [10, 50])
def test_topk_candidates_equal_sentence_transformers(tmp_path, cache_dir, depth):
    data = load_source(BeirSource(path=str(EXAMPLE), split="train"))
    # One positive per query: mine_hard_negatives only excludes the positives it is given per query.
    pairs = build_pairs(data)
    first = {}
    for i, q in enumerate(pairs.query_ids):
        first.setdefault(q, i)
    keep = np.asarray(sorted(first.values()))
    data.qrels = {pairs.query_ids[i]: {pairs.positive_ids[i]: 1} for i in keep}
    pairs = build_pairs(data)

    enc = Encoder(BUNDLED_MODEL, 256, 64, True, "cpu")
    corpus_emb = embed_texts(enc, data.corpus.texts, "", cache_dir, 4096)
    query_emb = embed_texts(enc, data.queries.texts, "", cache_dir, 4096)

    searcher = Searcher(corpus_emb, "Flat", "cosine", "cpu", 1, 1, 1, 0, 1e12)
    cfg = MineConfig(
        n_negatives=5,
        exclude_query_text=False,
        sampler={"kind": "topk", "range_min": 0, "range_max": depth, "pick": "top"},
    )
    mined, _ = mine(data, pairs, corpus_emb, query_emb, searcher, cfg, 1024, 0)

    model = SentenceTransformer(resolve_model_path(BUNDLED_MODEL), device="cpu")
    anchors = [data.queries.texts[r] for r in pairs.query_rows]
    positives = [data.corpus.texts[r] for r in pairs.positive_rows]
    folder = st_prepopulate(
        model, anchors, query_emb[pairs.query_rows], data.corpus.texts, corpus_emb, positives, tmp_path / "st-cache"
    )
    st = mine_hard_negatives(
        Dataset.from_dict({"anchor": anchors, "positive": positives}),
        model,
        corpus=data.corpus.texts,
        num_negatives=5,
        range_max=depth - 1,
        sampling_strategy="top",
        output_format="n-tuple",
        use_faiss=True,
        cache_folder=str(folder),
        verbose=False,
    )
    # ST retrieves range_max + max_positives (= depth) raw ranks, the same pool as synth's range_max.
    text_to_id = {t: i for i, t in zip(data.corpus.ids, data.corpus.texts)}
    st_by_query = {row["anchor"]: [text_to_id[row[f"negative_{j}"]] for j in range(1, 6)] for row in st}
    # ST merges queries with identical text (SciFact has such pairs) and excludes the union of their
    # positives; compare only queries whose text is unique.
    text_count = {t: anchors.count(t) for t in anchors}
    compared = 0
    for i in range(len(pairs)):
        if text_count[anchors[i]] > 1:
            continue
        ours = [data.corpus.ids[r] for r in mined.negative_rows[i] if r >= 0]
        theirs = st_by_query.get(anchors[i])
        if theirs is None:
            continue
        assert set(ours) == set(theirs), pairs.query_ids[i]
        compared += 1
    assert compared >= 0.95 * len(pairs)  # nearly every query was compared
