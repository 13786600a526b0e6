"""A Hugging Face dataset of (anchor, positive) pairs, from disk (save_to_disk) or a Hub id.

An existing folder is read with ``datasets.load_from_disk`` (``split`` picks from a DatasetDict);
anything else is a Hub id for ``datasets.load_dataset(path, split=split)``, which fails with a
one-line ``UserError`` when offline. Both columns must hold strings: a null or other value is an
``InputError`` at ``path:row N`` (0-based, as in ``dataset[N]``). Ids, corpus and warnings:
``synth/sources/pairs.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from synth.core.errors import InputError, UserError
from synth.core.records import SourceData
from synth.core.checks import one_line, json_type
from synth.sources.pairs import build_pairs, given_negatives
from synth.core.strict import StrictModel


class HFPairsSource(StrictModel):
    kind: Literal["hf"] = "hf"
    license: str = Field(
        "unknown",
        description="licence of the corpus and queries (an SPDX-style id such as "
        "'cc-by-4.0'); copied to the report and the dataset card",
    )
    path: str = Field(description="a save_to_disk folder (relative to the recipe) or a Hub dataset id")
    split: str = "train"
    anchor_column: str = "anchor"
    positive_column: str = "positive"
    corpus: str | None = Field(None, description="optional extra passages to mine from (BEIR corpus.jsonl[.gz])")


def _open(config: HFPairsSource):
    import datasets

    path = Path(config.path)
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a saved dataset"
            raise InputError(str(path), f"expected a folder written by save_to_disk, got {one_line(exc)}") from None
        if isinstance(ds, datasets.DatasetDict):
            if config.split not in ds:
                raise InputError(str(path), f"expected split {config.split!r}, got splits {sorted(ds)}")
            ds = ds[config.split]
        return ds
    if path.is_absolute() or path.exists():
        got = "a file" if path.exists() else "nothing (no such folder)"
        raise InputError(str(path), f"expected a save_to_disk folder or a Hub dataset id, got {got}")
    try:
        return datasets.load_dataset(config.path, split=config.split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, bad split, ...: one line, no traceback
        raise UserError(
            f"{config.path}: expected a Hugging Face Hub dataset with split {config.split!r}, got {one_line(exc)}"
        ) from None


def load_hf_pairs(config: HFPairsSource) -> SourceData:
    ds = _open(config)
    columns = [config.anchor_column, config.positive_column]
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise InputError(config.path, f"expected columns {columns}, got {ds.column_names} (missing {missing})")
    given_negatives(ds.column_names, config.path)

    def rows():
        row = 0
        for batch in ds.select_columns(columns).with_format(None).iter(batch_size=1024):
            for anchor, positive in zip(batch[columns[0]], batch[columns[1]]):
                where = f"{config.path}:row {row}"
                for column, value in zip(columns, (anchor, positive)):
                    if not isinstance(value, str):
                        raise InputError(where, f'expected a string in column "{column}", got {json_type(value)}')
                yield where, anchor, positive
                row += 1

    return build_pairs(rows(), config.path, config.corpus)
