"""Sentence-transformers layouts: a ``datasets`` dataset whose columns a ``SentenceTransformerTrainer`` loss
reads as they are. ``LAYOUTS`` declares each layout once (its columns, its config name, how one
(query, positive, negatives) becomes rows); the run's row builder (``rows.build_rows``), the recipe's
``output.format`` values and relabel's reader and writer all read it. A new layout is one entry there.

**Configs.** A run saves one ``DatasetDict`` (``save_configs``). Every layout config (``triplets``,
``n_tuple``, ...) holds only what the trainer takes: the text columns, in the order the losses read
them, and a float ``label`` where the layout's loss needs one. sentence-transformers tokenises *every*
non-label column, so anything else would break training as loaded (a list column: "Unsupported input
type: list"). The provenance of config ``X`` (ids, scores, sampler, seed, query origin, judge verdicts)
is the parallel config ``X_provenance``, row for row: its ``row_id`` is the row's index in ``X``. ``X``
carries no ``row_id`` (the trainer would take it as an input), so the two align by row order, which
``with_provenance`` checks when it joins them back.

Relabel reads and writes these layouts through ``synth.formats.hf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from synth.core.errors import InputError
from synth.core.files import atomic_dir

TRAINING_CONFIG = "triplets"  # the run's main layout config, whatever the format
ROW_ID = "row_id"  # first column of a provenance config: the row's index in its layout config
PROVENANCE_SUFFIX = "_provenance"
PROVENANCE_IDS = ("query_id", "positive_id", "negative_ids")  # relabel: an input with these keeps its ids

# One layout row: its values for the layout's columns, and the negatives it holds (for the provenance columns)
LayoutRow = tuple[list, list]


@dataclass(frozen=True)
class Layout:
    help: str  # what its rows hold, for the recipe's schema
    config: str  # its config name in DIR/dataset when it is an extra format (config names avoid "-")
    columns: Callable[[int], list[str]]  # the trainable columns, for n negatives per pair
    # (query text, positive text, the pair's negatives (``.text``), n) -> its rows; None: too few negatives
    rows: Callable[[str, str, list, int], list[LayoutRow] | None]
    loss: str = "MultipleNegativesRankingLoss"  # the sentence-transformers loss that trains it (the card's snippet)
    mines: bool = True  # its rows hold negatives (``pairs``: no; its provenance says sampler "none")
    # relabel: every row holds exactly n negatives, so a row short of them is refilled from the query's others
    fixed_width: bool = False
    # relabel input: n when ``columns`` are this layout, else 0 (None: relabel does not read the layout)
    detect: Callable[[list[str]], int] | None = None


def _numbered(columns: list[str]) -> int:
    n = 0
    while f"negative_{n + 1}" in columns:
        n += 1
    return n


def _n_tuple(q: str, p: str, negs: list, n: int) -> list[LayoutRow] | None:
    return None if len(negs) < n else [([q, p, *[x.text for x in negs[:n]]], negs[:n])]


# recipe `output.format` value -> its layout (the recipe's choices are these keys, in this order)
LAYOUTS: dict[str, Layout] = {
    "n-tuple": Layout(
        help="anchor, positive, negative_1..n",
        config="n_tuple",
        columns=lambda n: ["anchor", "positive", *[f"negative_{i + 1}" for i in range(n)]],
        rows=_n_tuple,
        fixed_width=True,
        detect=_numbered,
    ),
    "triplet": Layout(
        help="one row per negative",
        config="triplet",
        columns=lambda n: ["anchor", "positive", "negative"],
        rows=lambda q, p, negs, n: [([q, p, x.text], [x]) for x in negs],
        detect=lambda columns: int("negative" in columns),
    ),
    "labeled-pair": Layout(  # the positive with label 1, then each negative with label 0
        help="sentence1, sentence2, label",
        config="labeled_pair",
        columns=lambda n: ["sentence1", "sentence2", "label"],
        rows=lambda q, p, negs, n: [([q, p, 1.0], [])] + [([q, x.text, 0.0], [x]) for x in negs],
        loss="ContrastiveLoss",
    ),
    "pairs": Layout(
        help="anchor, positive; no mining",
        config="pairs",
        columns=lambda n: ["anchor", "positive"],
        rows=lambda q, p, negs, n: [([q, p], [])],
        mines=False,
    ),
}


def text_columns(fmt: str, n: int) -> list[str]:
    return LAYOUTS[fmt].columns(n)


def provenance_config(name: str) -> str:
    """The name of the config that holds the provenance of layout config ``name``."""
    return name + PROVENANCE_SUFFIX


def layout_configs(name: str, cols: dict, fmt: str, n: int) -> dict:
    """``build_rows``' columns as two configs: ``name`` with the trainable columns only, and
    ``name_provenance`` with ``row_id`` then every other column, row for row."""
    import datasets

    text = text_columns(fmt, n)
    # Explicit types: an empty config would otherwise get "null" columns that no loss accepts.
    features = datasets.Features({c: datasets.Value("float64" if c == "label" else "string") for c in text})
    train = datasets.Dataset.from_dict({c: cols[c] for c in text}, features=features)
    rest = {c: v for c, v in cols.items() if c not in text}
    prov = datasets.Dataset.from_dict({ROW_ID: list(range(len(train))), **rest})
    return {name: train, provenance_config(name): prov}


def with_provenance(configs, name: str, where: str = "dataset"):
    """Config ``name`` of ``configs`` with its provenance config's columns joined back (``row_id`` kept, so a
    writer can split them again); ``configs[name]`` alone when it has no provenance config. A provenance
    config out of line with its rows is an ``InputError`` naming both."""
    import datasets

    rows = configs[name]
    prov_name = provenance_config(name)
    if prov_name not in configs:
        return rows
    prov = configs[prov_name]
    # read through Arrow: a large config never becomes a Python list
    ids = prov.with_format("arrow")[:][ROW_ID].to_numpy() if ROW_ID in prov.column_names and len(prov) else []
    if len(prov) != len(rows) or not np.array_equal(ids, np.arange(len(rows))):
        raise InputError(
            f"{where}: config {prov_name}",
            f"expected {len(rows)} rows with {ROW_ID} 0..{len(rows) - 1} in order, one per row of config {name}",
        )
    clash = [c for c in prov.column_names if c in rows.column_names]
    if clash:
        raise InputError(f"{where}: config {prov_name}", f"columns {', '.join(clash)} are also in config {name}")
    return datasets.concatenate_datasets([rows, prov], axis=1)


def save_configs(configs: dict, path: Path) -> None:
    """One ``DatasetDict`` keyed by config name, saved to a temporary sibling and renamed into place."""
    import datasets

    with atomic_dir(path) as tmp:
        # an empty config would be saved as 0 shards, which does not load back
        datasets.DatasetDict(configs).save_to_disk(
            str(tmp), num_shards={name: 1 for name, ds in configs.items() if len(ds) == 0} or None
        )


def save_dataset(ds, path: Path) -> None:
    """One ``Dataset`` saved to a temporary sibling and renamed into place."""
    with atomic_dir(path) as tmp:
        ds.save_to_disk(str(tmp), num_shards=1 if len(ds) == 0 else None)  # 0 shards would not load back
