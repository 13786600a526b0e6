"""Input sources -> ``SourceData`` (corpus, queries, qrels, findings), checked as they are read.

A new source kind is one module (its config class and its loader) and one line in ``REGISTRY``. A source
that is an on-disk format synth also writes lives with its writer in ``synth.formats`` (BEIR: ``formats/beir.py``);
the input checks every reader shares are ``synth/core/checks.py``.
"""

from __future__ import annotations

from synth.core.records import SourceData
from synth.core.registry import build, config_union
from synth.formats.beir import BeirSource, load_beir
from synth.sources.corpus import CorpusSource, load_corpus
from synth.sources.hf import HFPairsSource, load_hf_pairs
from synth.sources.jsonl import JsonlPairsSource, load_jsonl_pairs

# kind -> (config model, loader ``load(config) -> SourceData``)
REGISTRY: dict[str, tuple[type, object]] = {
    "beir": (BeirSource, load_beir),
    "hf": (HFPairsSource, load_hf_pairs),
    "jsonl": (JsonlPairsSource, load_jsonl_pairs),
    "corpus": (CorpusSource, load_corpus),
}

SourceConfig = config_union(REGISTRY)


def load_source(config) -> SourceData:
    """Load and check a source. Paths in ``config`` are already absolute (resolved by the recipe)."""
    return build(REGISTRY, config)


__all__ = ["SourceConfig", "load_source"]
