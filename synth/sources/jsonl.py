"""JSONL pairs: one {"anchor": ..., "positive": ...} object per line.

Each line must be a JSON object with string anchor and positive fields (else ``InputError`` at
``file:line``); other fields are ignored, except a field of negatives (``negative``...), which is refused
(``pairs.given_negatives``). Ids, corpus and warnings: ``synth/sources/pairs.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synth.core.records import SourceData
from synth.core.checks import iter_json_objects, require_file, require_str
from synth.sources.pairs import build_pairs, given_negatives
from synth.core.strict import StrictModel


class JsonlPairsSource(StrictModel):
    kind: Literal["jsonl"] = "jsonl"
    license: str = Field(
        "unknown",
        description="licence of the corpus and queries (an SPDX-style id such as "
        "'cc-by-4.0'); copied to the report and the dataset card",
    )
    path: str = Field(description="JSONL file, relative to the recipe file")
    anchor_field: str = "anchor"
    positive_field: str = "positive"
    corpus: str | None = Field(None, description="optional extra passages to mine from (BEIR corpus.jsonl[.gz])")


def load_jsonl_pairs(config: JsonlPairsSource) -> SourceData:
    require_file(config.path, "a JSONL file of pairs")

    def rows():
        for where, obj in iter_json_objects(config.path):
            given_negatives(obj, where)
            anchor = require_str(obj, config.anchor_field, where)
            positive = require_str(obj, config.positive_field, where)
            yield where, anchor, positive

    return build_pairs(rows(), str(config.path), config.corpus)
