"""Relabel inputs and outputs as ``Example``s (a query, its positives, its negatives), and back.

Two input kinds, each written back in its own format:

- **HF dataset** (a ``save_to_disk`` folder, or a Hub id already in the local HF cache; nothing is
  downloaded; a ``synth run`` output's ``DatasetDict`` is read from its ``triplets`` config, joined row
  for row with its ``triplets_provenance`` config when present) in a
  sentence-transformers layout: **n-tuple** (anchor, positive, negative_1..n) or
  **triplet** (anchor, positive, negative), detected from the columns. Rows are grouped by query.
  Ids come from synth's provenance columns (query_id, positive_id, negative_ids) when present,
  otherwise from the text ("q-"/"d-" + 16 hex of its sha256), so identical texts share an id.
  Writing keeps the input's row structure: each input row keeps its positive and its surviving
  negatives (in order). A promoted positive (``relabel_as_positive``) gets a row with the query's
  surviving negatives. n-tuple keeps n: a row short of n negatives is first refilled from the
  same query's other surviving negatives (``rows_refilled``), and dropped only if it still falls
  short (``rows_short_dropped``). Triplet: one row per (positive, negative). Provenance columns are
  written only if the input had them (negative_ids / negative_scores follow the kept negatives). An
  input joined from a provenance config (it has ``row_id``) is written in the same shape: a
  ``DatasetDict`` whose ``triplets`` holds the text columns only (it trains as loaded) and whose
  ``triplets_provenance`` holds ``row_id`` (renumbered) and the rest, row for row.
- **Tevatron JSONL**: one line per query with ``query_id``, ``query``, ``positive_passages`` and
  ``negative_passages`` (lists of ``{docid, title, text}``). Lists of any length are written; every
  other key and each passage dict are kept verbatim, so read -> write (policy keep) -> read is
  lossless. Judges see a passage as ``title + " " + text`` (just ``text`` when the title is empty).

Every output is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from synth.core.errors import InputError, UserError
from synth.judge.policies import Example, Passage
from synth.sources.checks import iter_json_objects, quoted
from synth.formats.rows import ROW_ID, TRAINING_CONFIG, provenance_config, save_configs, with_provenance

TEVATRON_KEYS = ("query_id", "query", "positive_passages", "negative_passages")
PROVENANCE_IDS = ("query_id", "positive_id", "negative_ids")


def text_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class Row:
    """One input row (HF) as ids: its positive and its negatives, and the row index for other columns."""

    index: int
    positive_id: str
    negative_ids: list[str]


@dataclass
class RelabelInput:
    source: str  # the path or Hub id as given
    kind: str  # "hf" | "tevatron"
    layout: str  # "n-tuple" | "triplet" | "tevatron"
    n: int  # negatives per n-tuple row (1 for triplet, 0 for tevatron)
    examples: list[Example]
    rows: dict[str, list[Row]] = field(default_factory=dict)  # HF: query_id -> its input rows
    columns: list[str] = field(default_factory=list)  # HF: the input's columns, in order
    table: dict[str, list] = field(default_factory=dict)  # HF: non-text column values by row
    scores: dict[tuple[str, str], float] = field(default_factory=dict)  # (qid, doc_id) -> mined bi score
    raw: dict[str, dict] = field(default_factory=dict)  # tevatron: query_id -> the line's dict
    passages: dict[tuple[str, str], dict] = field(default_factory=dict)  # tevatron: (qid, docid) -> passage
    features: object = None  # HF: the input's ``datasets.Features``

    def summary(self) -> dict:
        return {"source": self.source, "kind": self.kind, "layout": self.layout, "n": self.n,
                "queries": len(self.examples), "rows": sum(len(r) for r in self.rows.values()) or len(self.examples),
                "positives": sum(len(e.positives) for e in self.examples),
                "negatives": sum(len(e.negatives) for e in self.examples)}


# ---------------------------------------------------------------------------------------------- read

def read_input(source: str | Path) -> RelabelInput:
    """Detect and read an input: a ``.jsonl`` file (Tevatron), a saved dataset folder, or a Hub id."""
    src = str(source)
    path = Path(src).expanduser()
    if path.is_file():
        return read_tevatron(path)
    if path.is_dir():
        return read_hf(src, _load_disk(path))
    if src.endswith((".jsonl", ".json")) or src.startswith((".", "/", "~")):
        raise UserError(f"--input {src}: no such file or folder")
    return read_hf(src, _load_hub(src))


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


def detect_layout(columns: list[str], where: str) -> tuple[str, int]:
    if "anchor" not in columns or "positive" not in columns:
        raise UserError(f"{where}: expected sentence-transformers columns anchor, positive, negative[_1..n]; "
                        f"got {', '.join(columns)}")
    numbered = 0
    while f"negative_{numbered + 1}" in columns:
        numbered += 1
    if numbered:
        return "n-tuple", numbered
    if "negative" in columns:
        return "triplet", 1
    raise UserError(f"{where}: no negative / negative_1 column: nothing to relabel")


def read_hf(source: str, ds) -> RelabelInput:
    columns = list(ds.column_names)
    layout, n = detect_layout(columns, source)
    neg_cols = [f"negative_{i + 1}" for i in range(n)] if layout == "n-tuple" else ["negative"]
    text_cols = ["anchor", "positive", *neg_cols]
    data = ds.to_dict()
    has_ids = all(c in columns for c in PROVENANCE_IDS)
    inp = RelabelInput(source, "hf", layout, n, [], columns=columns,
                       table={c: data[c] for c in columns if c not in text_cols}, features=ds.features)
    order: list[str] = []
    queries: dict[str, str] = {}
    pos: dict[str, dict[str, Passage]] = {}
    neg: dict[str, dict[str, Passage]] = {}
    for i in range(len(ds)):
        q, p = data["anchor"][i], data["positive"][i]
        negs = [data[c][i] for c in neg_cols]
        if any(not isinstance(t, str) for t in (q, p, *negs)):
            raise InputError(f"{source}:row {i}", "a text column holds a non-string value")
        if has_ids:
            qid, pid, nids = str(data["query_id"][i]), str(data["positive_id"][i]), data["negative_ids"][i]
            if not isinstance(nids, list) or len(nids) != len(negs):
                raise InputError(f"{source}:row {i}", f"negative_ids has {len(nids or [])} ids for {len(negs)} negatives")
            nids = [str(x) for x in nids]
        else:
            qid, pid, nids = text_id("q-", q), text_id("d-", p), [text_id("d-", t) for t in negs]
        if qid not in queries:
            order.append(qid)
            queries[qid], pos[qid], neg[qid] = q, {}, {}
        pos[qid].setdefault(pid, Passage(pid, p))
        for d, t in zip(nids, negs):
            neg[qid].setdefault(d, Passage(d, t))
        inp.rows.setdefault(qid, []).append(Row(i, pid, nids))
        _collect_scores(inp, data, i, qid, pid, nids)
    inp.examples = [Example(q, queries[q], list(pos[q].values()), list(neg[q].values())) for q in order]
    return inp


def _collect_scores(inp: RelabelInput, data: dict, i: int, qid: str, pid: str, nids: list[str]) -> None:
    """Mined bi-encoder scores from synth's provenance (negative_scores, positive_score) when present."""
    ns, ps = data.get("negative_scores"), data.get("positive_score")
    if ns is None or ps is None or ns[i] is None or ps[i] is None or len(ns[i]) != len(nids):
        return
    inp.scores.setdefault((qid, pid), float(ps[i]))
    for d, s in zip(nids, ns[i]):
        if s is not None:
            inp.scores.setdefault((qid, d), float(s))


def passage_text(p: dict) -> str:
    title, text = str(p.get("title") or "").strip(), str(p.get("text") or "")
    return f"{title} {text}" if title else text


def _unique(items: list[Passage]) -> list[Passage]:
    seen: set[str] = set()
    return [p for p in items if not (p.id in seen or seen.add(p.id))]


def _is_id(value) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def read_tevatron(path: Path) -> RelabelInput:
    inp = RelabelInput(str(path), "tevatron", "tevatron", 0, [])
    # The shared line reader: a BOM, CRLF and .gz are fine; bad bytes, NULs, deep nesting and lone
    # surrogates (which would crash the UTF-8 write of data.jsonl) stop here at file:line.
    for where, obj in iter_json_objects(path):
        missing = [k for k in TEVATRON_KEYS if k not in obj]
        if missing:
            raise InputError(where, f"missing {', '.join(missing)}")
        qid, query = obj["query_id"], obj["query"]
        if not _is_id(qid) or not isinstance(query, str):
            raise InputError(where, "query_id must be a string (or integer) and query a string")
        qid = str(qid)
        if qid in inp.raw:
            raise InputError(where, f"query_id {quoted(qid)} appears twice")
        lists = {}
        for key in ("positive_passages", "negative_passages"):
            items = obj[key]
            if not isinstance(items, list):
                raise InputError(where, f"{key} must be a list")
            out = []
            for j, p in enumerate(items):
                if not isinstance(p, dict) or not _is_id(p.get("docid")) or not isinstance(p.get("text"), str) \
                        or not isinstance(p.get("title", ""), (str, type(None))):
                    raise InputError(where, f"{key}[{j}]: expected {{docid, title, text}} with a string or integer "
                                            "docid and string texts")
                did = str(p["docid"])
                inp.passages.setdefault((qid, did), p)
                out.append(Passage(did, passage_text(p)))
            lists[key] = _unique(out)  # a repeated docid is kept once
        inp.raw[qid] = obj
        inp.examples.append(Example(qid, query, lists["positive_passages"], lists["negative_passages"]))
    if not inp.examples:
        raise InputError(str(path), "no queries")
    return inp


# --------------------------------------------------------------------------------------------- write

def write_output(inp: RelabelInput, examples: list[Example], out_dir: Path) -> dict:
    """Write ``examples`` in the input's format under ``out_dir``; returns counts for the report."""
    if inp.kind == "tevatron":
        return write_tevatron(inp, examples, out_dir / "data.jsonl")
    return write_hf(inp, examples, out_dir / "dataset")


def write_tevatron(inp: RelabelInput, examples: list[Example], path: Path) -> dict:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    counts = {"format": "tevatron", "rows": 0, "positives": 0, "negatives": 0}
    with open(tmp, "w", encoding="utf-8") as f:
        for ex in examples:
            obj = dict(inp.raw[ex.query_id])  # keeps key order and every other key
            for key, items in (("positive_passages", ex.positives), ("negative_passages", ex.negatives)):
                obj[key] = [inp.passages[(ex.query_id, p.id)] for p in items]
            counts["positives"] += len(ex.positives)
            counts["negatives"] += len(ex.negatives)
            counts["rows"] += 1
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return counts


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
    import datasets

    n, layout = inp.n, inp.layout
    text_cols = ["anchor", "positive"] + ([f"negative_{i + 1}" for i in range(n)] if layout == "n-tuple" else ["negative"])
    cols: dict[str, list] = {c: [] for c in inp.columns}
    per_negative = per_negative_values(inp)
    empties = {c: empty_like(v.values()) for c, v in per_negative.items()}
    counts = {"format": layout, "rows": 0, "rows_in": sum(len(r) for r in inp.rows.values()),
              "rows_short_dropped": 0, "rows_refilled": 0, "rows_for_promoted_positives": 0, "examples_without_rows": 0}

    def emit(ex: Example, src: int, pos: Passage, negs: list[Passage]) -> None:
        cols["anchor"].append(ex.query)
        cols["positive"].append(pos.text)
        for c, p in zip(text_cols[2:], negs):
            cols[c].append(p.text)
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
                value = [per_negative[c].get((ex.query_id, p.id), empties[c]) for p in negs]
            elif c == ROW_ID:  # the row's index in the written rows
                value = counts["rows"]
            cols[c].append(value)
        counts["rows"] += 1

    for ex in examples:
        before = counts["rows"]
        alive = {p.id: p for p in ex.negatives}
        positives = {p.id: p for p in ex.positives}
        rows = inp.rows[ex.query_id]
        plan = [(r.index, positives[r.positive_id], [alive[d] for d in r.negative_ids if d in alive])
                for r in rows if r.positive_id in positives]
        had = {r.positive_id for r in rows}
        for p in ex.positives:
            if p.id not in had:  # promoted: pair it with the query's surviving negatives
                plan.append((rows[0].index, p, list(ex.negatives)))
                counts["rows_for_promoted_positives"] += 1
        for src, pos, negs in plan:
            if layout == "triplet":
                for neg in negs:
                    emit(ex, src, pos, [neg])
                continue
            if len(negs) < n:
                extra = [p for p in ex.negatives if p not in negs]
                if len(negs) + len(extra) < n:
                    counts["rows_short_dropped"] += 1
                    continue
                negs = negs + extra[: n - len(negs)]
                counts["rows_refilled"] += 1
            emit(ex, src, pos, negs[:n])
        if counts["rows"] == before:
            counts["examples_without_rows"] += 1
    ds = datasets.Dataset.from_dict(cols, features=inp.features)  # the input's schema, even when empty
    if ROW_ID in ds.column_names:  # read from trainable + provenance configs: written back in that shape
        rest = [c for c in ds.column_names if c not in text_cols and c != ROW_ID]
        save_configs({TRAINING_CONFIG: ds.select_columns(text_cols),
                      provenance_config(TRAINING_CONFIG): ds.select_columns([ROW_ID, *rest])}, path)
        counts["columns"] = text_cols
        return counts
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.save_to_disk(str(tmp), num_shards=1 if len(ds) == 0 else None)  # 0 shards would not load back
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    counts["columns"] = ds.column_names
    return counts

