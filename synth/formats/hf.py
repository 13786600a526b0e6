"""The ``hf`` format of relabel: a sentence-transformers dataset in one of ``st.LAYOUTS``, read and written
back in its own layout.

**Relabel input** (a ``save_to_disk`` folder, or a Hub id already in the local HF cache; nothing is
downloaded; a ``synth run`` output's ``DatasetDict`` is read from its ``triplets`` config, joined row for
row with its ``triplets_provenance`` config when present): **n-tuple** or **triplet**, detected from the
columns. Rows are grouped by query. Ids come from synth's provenance columns (query_id, positive_id,
negative_ids) when present, otherwise from the text ("q-"/"d-" + its ``content_id``), so identical texts
share an id. Writing back (``write_hf``) keeps the input's row structure.
"""

from __future__ import annotations

import math
from pathlib import Path


from synth.core.checks import quoted
from synth.core.errors import InputError, UserError
from synth.core.records import Example, Passage
from synth.core.text import content_id
from synth.formats.base import Format, RelabelInput, Row
from synth.formats.st import (
    LAYOUTS,
    PROVENANCE_IDS,
    ROW_ID,
    TRAINING_CONFIG,
    provenance_config,
    save_configs,
    save_dataset,
    text_columns,
    with_provenance,
)


def detect_layout(columns: list[str], where: str) -> tuple[str, int]:
    """(layout, n) of an input's columns: the first of ``LAYOUTS`` that relabel reads and that matches."""
    if "anchor" not in columns or "positive" not in columns:
        raise UserError(
            f"{where}: expected sentence-transformers columns anchor, positive, negative[_1..n]; "
            f"got {', '.join(columns)}"
        )
    for name, layout in LAYOUTS.items():
        n = layout.detect(columns) if layout.detect else 0
        if n:
            return name, n
    raise UserError(f"{where}: no negative / negative_1 column: nothing to relabel")


def accepts(source: str) -> bool:
    """A folder, or a name that does not look like a path (a Hub id)."""
    return Path(source).expanduser().is_dir() or not (
        source.endswith((".jsonl", ".json")) or source.startswith((".", "/", "~"))
    )


def read(source: str) -> RelabelInput:
    path = Path(source).expanduser()
    return read_hf(source, _load_disk(path) if path.is_dir() else _load_hub(source))


def _single_split(ds, where: str):
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if TRAINING_CONFIG in ds:  # a `synth run` output: the training rows and their provenance config
            return with_provenance(ds, TRAINING_CONFIG, where)
        if "train" in ds:
            return ds["train"]
        if len(ds) == 1:
            return next(iter(ds.values()))
        raise UserError(f"{where}: a dataset with splits {sorted(ds)} and no 'train'; save one split")
    return ds


def _load_disk(path: Path):
    import datasets

    try:
        return _single_split(datasets.load_from_disk(str(path)), str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: not a dataset saved with save_to_disk (nor a Tevatron .jsonl file)") from None


def _load_hub(name: str):
    import datasets

    try:
        return _single_split(datasets.load_dataset(name), name)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- offline and not cached, unknown id, ...
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"--input {name}: not a local path and not in the local HF cache (offline): {first}") from None


def read_hf(source: str, ds) -> RelabelInput:
    columns = list(ds.column_names)
    layout, n = detect_layout(columns, source)
    text_cols = text_columns(layout, n)
    neg_cols = text_cols[2:]
    data = ds.to_dict()
    has_ids = all(c in columns for c in PROVENANCE_IDS)
    inp = RelabelInput(
        source,
        "hf",
        layout,
        n,
        [],
        columns=columns,
        table={c: data[c] for c in columns if c not in text_cols},
        features=ds.features,
    )
    order: list[str] = []
    queries: dict[str, str] = {}
    first_row: dict[str, int] = {}  # query id -> the first row that names it
    ids = _OneTextPerId(source)
    pos: dict[str, dict[str, Passage]] = {}
    neg: dict[str, dict[str, Passage]] = {}
    for i in range(len(ds)):
        q, p = data["anchor"][i], data["positive"][i]
        negs = [data[c][i] for c in neg_cols]
        if any(not isinstance(t, str) for t in (q, p, *negs)):
            raise InputError(f"{source}:row {i}", "a text column holds a non-string value")
        if has_ids:
            qid, pid, nids = _provenance_ids(source, data, i, q, p, negs, queries, first_row, ids)
        else:  # ids from the texts: identical texts share an id
            qid, pid, nids = "q-" + content_id(q), "d-" + content_id(p), ["d-" + content_id(t) for t in negs]
        if qid not in queries:
            order.append(qid)
            first_row[qid] = i
            queries[qid], pos[qid], neg[qid] = q, {}, {}
        pos[qid].setdefault(pid, Passage(pid, p))
        for d, t in zip(nids, negs):
            neg[qid].setdefault(d, Passage(d, t))
        inp.rows.setdefault(qid, []).append(Row(i, pid, nids))
        _collect_scores(inp, data, i, qid, pid, nids)
    _drop_negatives_equal_to_positives(inp, order, pos, neg)
    inp.examples = [Example(q, queries[q], list(pos[q].values()), list(neg[q].values())) for q in order]
    return inp


def _provenance_ids(
    source: str,
    data: dict,
    i: int,
    q: str,
    p: str,
    negs: list[str],
    queries: dict[str, str],
    first_row: dict[str, int],
    ids: _OneTextPerId,
) -> tuple[str, str, list[str]]:
    """(query id, positive id, negative ids) of row ``i`` from synth's provenance columns, checked: one
    negative id per negative, one query text per query id and one passage text per passage id."""
    qid, pid, nids = str(data["query_id"][i]), str(data["positive_id"][i]), data["negative_ids"][i]
    if not isinstance(nids, list) or len(nids) != len(negs):
        raise InputError(f"{source}:row {i}", f"negative_ids has {len(nids or [])} ids for {len(negs)} negatives")
    nids = [str(x) for x in nids]
    if qid in queries and queries[qid] != q:
        raise InputError(
            f"{source}:row {i}",
            f"query_id {quoted(qid)} has a different anchor than on row {first_row[qid]}; "
            "one query_id must be one query text",
        )
    ids.check(pid, p, i, "positive_id")
    for d, t in zip(nids, negs):
        ids.check(d, t, i, "negative_ids")
    return qid, pid, nids


def _drop_negatives_equal_to_positives(
    inp: RelabelInput, order: list[str], pos: dict[str, dict[str, Passage]], neg: dict[str, dict[str, Passage]]
) -> None:
    """A positive of the query is never judged, nor written back, as its negative: drop it from ``neg``
    (in place) and count it in ``inp.dropped``."""
    for q in order:
        same = [d for d in neg[q] if d in pos[q]]
        for d in same:
            del neg[q][d]
        if same:
            inp.dropped["negatives_equal_to_positive"] = inp.dropped.get("negatives_equal_to_positive", 0) + len(same)


class _OneTextPerId:
    """Remembers the text and first row of each passage id; the same id with another text is an
    ``InputError`` naming both rows (it would otherwise replace one passage with the other)."""

    def __init__(self, source: str):
        self.source = source
        self.first: dict[str, tuple[int, str]] = {}

    def check(self, doc_id: str, text: str, row: int, column: str) -> None:
        first = self.first.setdefault(doc_id, (row, text))
        if first[1] != text:
            raise InputError(
                f"{self.source}:row {row}",
                f"{column} {quoted(doc_id)} has a different text than on row {first[0]}; one id must be one passage",
            )


def _collect_scores(inp: RelabelInput, data: dict, i: int, qid: str, pid: str, nids: list[str]) -> None:
    """Mined bi-encoder scores from synth's provenance (negative_scores, positive_score) when present."""
    ns, ps = data.get("negative_scores"), data.get("positive_score")
    if ns is None or ps is None or ns[i] is None or ps[i] is None or len(ns[i]) != len(nids):
        return
    inp.scores.setdefault((qid, pid), float(ps[i]))
    for d, s in zip(nids, ns[i]):
        if s is not None:
            inp.scores.setdefault((qid, d), float(s))


# ----------------------------------------------------------------------------- relabel output: write


def per_negative_values(inp: RelabelInput) -> dict[str, dict[tuple[str, str], object]]:
    """Per-negative provenance lists (a synth run's ``negative_sources``, ``negative_verdicts``, judge
    scores...) keyed by (query_id, doc_id), from every input row, so a relabeled row's lists follow its
    negatives (refilled ones included) instead of keeping the source row's positions."""
    ids = inp.table.get("negative_ids")
    qids = inp.table.get("query_id")
    if ids is None or qids is None:
        return {}
    out: dict[str, dict[tuple[str, str], object]] = {}
    for c, values in inp.table.items():
        if c in ("negative_ids", "negative_scores") or not c.startswith("negative_"):
            continue
        if not all(isinstance(v, list) for v in values):
            continue
        out[c] = {(str(q), str(d)): v for q, row_ids, row in zip(qids, ids, values) for d, v in zip(row_ids or [], row)}
    return out


def empty_like(values) -> object:
    """The empty value of a provenance column: NaN for numbers, "" for strings, else None."""
    sample = next(iter(values), None)
    if isinstance(sample, float):
        return math.nan
    return "" if isinstance(sample, str) else None


def write_hf(inp: RelabelInput, examples: list[Example], path: Path) -> dict:
    """Each input row keeps its positive and its surviving negatives (in order). A promoted positive
    (``relabel_as_positive``) gets a row with the query's surviving negatives. A fixed-width layout
    (n-tuple) keeps n: a row short of n negatives is first refilled from the same query's other surviving
    negatives (``rows_refilled``), and dropped only if it still falls short (``rows_short_dropped``);
    triplet: one row per (positive, negative). Provenance columns are written only if the input had them
    (negative_ids / negative_scores follow the kept negatives). An input joined from a provenance config
    (it has ``row_id``) is written in the same shape: ``triplets`` holds the text columns only (it trains
    as loaded) and ``triplets_provenance`` holds ``row_id`` (renumbered) and the rest, row for row."""
    import datasets

    n, layout = inp.n, LAYOUTS[inp.layout]
    text_cols = layout.columns(n)
    counts = {
        "format": inp.layout,
        "rows": 0,
        "rows_in": sum(len(r) for r in inp.rows.values()),
        "rows_short_dropped": 0,
        "rows_refilled": 0,
        "rows_for_promoted_positives": 0,
        "examples_without_rows": 0,
    }
    out = _RowWriter(inp, text_cols, counts)
    for ex in examples:
        before = counts["rows"]
        for src, pos, negs in _row_plan(inp, ex, counts):
            if layout.fixed_width and len(negs) < n:
                extra = [p for p in ex.negatives if p not in negs]
                if len(negs) + len(extra) < n:
                    counts["rows_short_dropped"] += 1
                    continue
                negs = negs + extra[: n - len(negs)]
                counts["rows_refilled"] += 1
            for values, row_negs in layout.rows(ex.query, pos.text, negs, n) or []:
                out.emit(ex, src, pos, values, row_negs)
        if counts["rows"] == before:
            counts["examples_without_rows"] += 1
    ds = datasets.Dataset.from_dict(out.cols, features=inp.features)  # the input's schema, even when empty
    counts["columns"] = _save_like_input(ds, text_cols, path)
    return counts


def _row_plan(inp: RelabelInput, ex: Example, counts: dict) -> list[tuple[int, Passage, list[Passage]]]:
    """(source row, positive, surviving negatives) of each row to write for ``ex``: its input rows whose
    positive survived, then one per promoted positive (on the query's first row's provenance)."""
    alive = {p.id: p for p in ex.negatives}
    positives = {p.id: p for p in ex.positives}
    rows = inp.rows[ex.query_id]
    plan = [
        (r.index, positives[r.positive_id], [alive[d] for d in r.negative_ids if d in alive])
        for r in rows
        if r.positive_id in positives
    ]
    had = {r.positive_id for r in rows}
    for p in ex.positives:
        if p.id not in had:  # promoted: pair it with the query's surviving negatives
            plan.append((rows[0].index, p, list(ex.negatives)))
            counts["rows_for_promoted_positives"] += 1
    return plan


class _RowWriter:
    """The written columns: a row's text columns, then each of the input's other columns taken from its source
    row, the ones that describe the negatives or the positive following the row's own; counts ``rows``."""

    def __init__(self, inp: RelabelInput, text_cols: list[str], counts: dict):
        self.inp, self.text_cols, self.counts = inp, text_cols, counts
        self.cols: dict[str, list] = {c: [] for c in inp.columns}
        self.per_negative = per_negative_values(inp)
        self.empties = {c: empty_like(v.values()) for c, v in self.per_negative.items()}

    def emit(self, ex: Example, src: int, pos: Passage, values: list, negs: list[Passage]) -> None:
        """Append one row: its text ``values``, then the other columns of input row ``src``."""
        inp, cols, per_negative = self.inp, self.cols, self.per_negative
        for c, v in zip(self.text_cols, values):
            cols[c].append(v)
        for c in inp.table:
            value = inp.table[c][src]
            if c == "positive_id":
                value = pos.id
            elif c == "negative_ids":
                value = [p.id for p in negs]
            elif c == "negative_scores":
                value = [inp.scores.get((ex.query_id, p.id), math.nan) for p in negs]
            elif c == "positive_score":
                value = inp.scores.get((ex.query_id, pos.id), math.nan)
            elif c in per_negative:
                value = [per_negative[c].get((ex.query_id, p.id), self.empties[c]) for p in negs]
            elif c == ROW_ID:  # the row's index in the written rows
                value = self.counts["rows"]
            cols[c].append(value)
        self.counts["rows"] += 1


def _save_like_input(ds, text_cols: list[str], path: Path) -> list[str]:
    """Save ``ds`` in the input's shape; returns the trainable columns written."""
    if ROW_ID in ds.column_names:  # read from trainable + provenance configs: written back in that shape
        rest = [c for c in ds.column_names if c not in text_cols and c != ROW_ID]
        save_configs(
            {
                TRAINING_CONFIG: ds.select_columns(text_cols),
                provenance_config(TRAINING_CONFIG): ds.select_columns([ROW_ID, *rest]),
            },
            path,
        )
        return text_cols
    save_dataset(ds, path)
    return ds.column_names


def write(inp: RelabelInput, examples: list[Example], out_dir: Path) -> dict:
    return write_hf(inp, examples, out_dir / "dataset")


FORMAT = Format(accepts=accepts, read=read, write=write)
