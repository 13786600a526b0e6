"""The real miner over crafted embeddings: top-k, 3 negatives, an exact index, with or without backfill."""

from __future__ import annotations

from synth.index import Searcher
from synth.mine import backfill_for, build_pairs, mine
from synth.recipe import MineConfig


def mine_topk(data, corpus_emb, query_emb, *, range_max: int, with_backfill: bool):
    """(Mined, MineStats) of a top-k miner asked for 3 negatives per pair."""
    pairs = build_pairs(data)
    cfg = MineConfig(n_negatives=3, sampler={"kind": "topk", "range_max": range_max})
    searcher = Searcher(corpus_emb, "Flat", "cosine", "cpu", 1, 1, 1, 0, 1e12)
    backfill = backfill_for(data, pairs, corpus_emb, query_emb, searcher, cfg, 2) if with_backfill else None
    return mine(data, pairs, corpus_emb, query_emb, searcher, cfg, 2, 0, backfill=backfill)
