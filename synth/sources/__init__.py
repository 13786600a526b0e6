"""Input sources -> ``SourceData`` (corpus, queries, qrels, findings). One module per source kind."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from synth.core.records import SourceData
from synth.sources.beir import BeirSource, load_beir
from synth.sources.hf import HFPairsSource, load_hf_pairs
from synth.sources.jsonl import JsonlPairsSource, load_jsonl_pairs

_LOADERS = {
    "beir": load_beir,
    "hf": load_hf_pairs,
    "jsonl": load_jsonl_pairs,
}

SourceConfig = Annotated[Union[BeirSource, HFPairsSource, JsonlPairsSource], Field(discriminator="kind")]


def load_source(config) -> SourceData:
    """Load and check a source. Paths in ``config`` are already absolute (resolved by the recipe)."""
    return _LOADERS[config.kind](config)


__all__ = ["SourceConfig", "load_source"]
