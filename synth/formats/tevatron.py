"""Tevatron training JSONL: one line per query with ``query_id``, ``query``, ``positive_passages`` and
``negative_passages`` (lists of ``{docid, title, text}``).

- Read as a relabel ``--input`` (``read``). Lists of any length; every other key and each passage dict are
  kept verbatim, so read -> write (policy keep) -> read is lossless. Judges see a passage as
  ``title + " " + text`` (just ``text`` when the title is empty). Within a line one docid is one passage
  (``_line_passages``: a clash is an error naming both places; a negative that is a positive is dropped
  and counted in the report's ``input.dropped``); a ``query_id`` appears once per file (``1`` and ``"1"``
  included).
- Written back by relabel (``write``: ``OUT/data.jsonl``) and by a run's ``output.files: [tevatron]``
  (``export``: ``OUT/tevatron/train.jsonl``), both through ``write_lines``.
"""

from __future__ import annotations

import json
from pathlib import Path

from synth.core.errors import InputError
from synth.core.files import atomic_file
from synth.core.records import Corpus, Example, Passage
from synth.formats.base import Format, Group, RelabelInput
from synth.core.checks import iter_json_objects, quoted

TEVATRON_KEYS = ("query_id", "query", "positive_passages", "negative_passages")
EXPORT_PATH = "tevatron/train.jsonl"  # a run's file, relative to its output folder


def passage_text(p: dict) -> str:
    # Unlike sources.checks.passage_text, the text is not stripped: relabel judges the passage as written.
    title, text = str(p.get("title") or "").strip(), str(p.get("text") or "")
    return f"{title} {text}" if title else text


def _is_id(value) -> bool:
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _id_kind(value) -> str:
    return "a number" if isinstance(value, int) else "a string"


def accepts(source: str) -> bool:
    return Path(source).expanduser().is_file()


def _check_passage(key: str, j: int, p, where: str) -> None:
    if (
        not isinstance(p, dict)
        or not _is_id(p.get("docid"))
        or not isinstance(p.get("text"), str)
        or not isinstance(p.get("title", ""), (str, type(None)))
    ):
        raise InputError(
            where, f"{key}[{j}]: expected {{docid, title, text}} with a string or integer docid and string texts"
        )


def _line_passages(obj: dict, qid: str, where: str, inp: RelabelInput) -> tuple[list[Passage], list[Passage]]:
    """A line's positives and negatives. One docid is one passage within a line: the same docid with another
    text, or once as a number and once as a string (1 and "1" read as the same id), is an ``InputError``
    naming both places; a passage listed twice in one list is kept once (``repeated_passages``); a negative
    that is one of the line's positives (same docid, same text) is dropped from the negatives
    (``negatives_equal_to_positive``): a positive is never judged, nor written back, as its own negative."""
    seen: dict[str, tuple[str, object, str]] = {}  # docid -> (where in the line, docid as given, text)
    lists: dict[str, list[Passage]] = {}
    for key in ("positive_passages", "negative_passages"):
        items = obj[key]
        if not isinstance(items, list):
            raise InputError(where, f"{key} must be a list")
        out: list[Passage] = []
        for j, p in enumerate(items):
            _check_passage(key, j, p, where)
            given, text, place = p["docid"], passage_text(p), f"{key}[{j}]"
            did = str(given)
            first = seen.get(did)
            if first is None:
                seen[did] = (place, given, text)
                inp.passages[(qid, did)] = p
                out.append(Passage(did, text))
                continue
            first_place, first_given, first_text = first
            if type(first_given) is not type(given):
                raise InputError(
                    where,
                    f"{place}: docid {json.dumps(given)} ({_id_kind(given)}) and {first_place}'s docid "
                    f"{json.dumps(first_given)} ({_id_kind(first_given)}) are one id once read; write every docid "
                    "the same way",
                )
            if first_text != text:
                raise InputError(
                    where,
                    f"{place}: docid {quoted(did)} is also {first_place} with a different title/text; "
                    "one docid must be one passage",
                )
            if key == "negative_passages" and first_place.startswith("positive_passages"):
                inp.dropped["negatives_equal_to_positive"] = inp.dropped.get("negatives_equal_to_positive", 0) + 1
            else:
                inp.dropped["repeated_passages"] = inp.dropped.get("repeated_passages", 0) + 1
        lists[key] = out
    return lists["positive_passages"], lists["negative_passages"]


def read(source: str | Path) -> RelabelInput:
    path = Path(source).expanduser()
    inp = RelabelInput(str(path), "tevatron", "tevatron", 0, [])
    first_line: dict[str, tuple[str, object]] = {}  # query_id -> (line, query_id as given)
    # The shared line reader: a BOM, CRLF and .gz are fine; bad bytes, NULs, deep nesting and lone
    # surrogates (which would crash the UTF-8 write of data.jsonl) stop here at file:line.
    for where, obj in iter_json_objects(path):
        missing = [k for k in TEVATRON_KEYS if k not in obj]
        if missing:
            raise InputError(where, f"missing {', '.join(missing)}")
        given, query = obj["query_id"], obj["query"]
        if not _is_id(given) or not isinstance(query, str):
            raise InputError(where, "query_id must be a string (or integer) and query a string")
        qid = str(given)
        if qid in first_line:
            line, first_given = first_line[qid]
            same = ' (1 and "1" are one id once read)' if type(first_given) is not type(given) else ""
            raise InputError(
                where,
                f"query_id {json.dumps(given)} appears twice (first as {json.dumps(first_given)} on line {line}){same}",
            )
        first_line[qid] = (where.rsplit(":", 1)[-1], given)
        positives, negatives = _line_passages(obj, qid, where, inp)
        inp.raw[qid] = obj
        inp.examples.append(Example(qid, query, positives, negatives))
    if not inp.examples:
        raise InputError(str(path), "no queries")
    return inp


def write_lines(inp: RelabelInput, examples: list[Example], path: Path) -> dict:
    """``examples`` as Tevatron lines at ``path``: each line is the input's own dict (key order and every
    other key kept) with its passage lists replaced by the examples' passages."""
    counts = {"format": "tevatron", "rows": 0, "positives": 0, "negatives": 0}
    with atomic_file(path, text=True) as f:
        for ex in examples:
            obj = dict(inp.raw[ex.query_id])
            for key, items in (("positive_passages", ex.positives), ("negative_passages", ex.negatives)):
                obj[key] = [inp.passages[(ex.query_id, p.id)] for p in items]
            counts["positives"] += len(ex.positives)
            counts["negatives"] += len(ex.negatives)
            counts["rows"] += 1
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    return counts


def write(inp: RelabelInput, examples: list[Example], out_dir: Path) -> dict:
    return write_lines(inp, examples, out_dir / "data.jsonl")


def export(groups: list[Group], corpus: Corpus, out_dir: Path) -> dict:
    """A run's rows as Tevatron training JSONL (one line per query; passages with an empty title, as embedded)."""
    inp = RelabelInput(EXPORT_PATH, "tevatron", "tevatron", 0, [])
    examples = []
    for qid, query, pos, neg in groups:
        inp.raw[qid] = {"query_id": qid, "query": query, "positive_passages": [], "negative_passages": []}
        for doc_id, text in pos + neg:
            inp.passages[(qid, doc_id)] = {"docid": doc_id, "title": "", "text": text}
        examples.append(Example(qid, query, [Passage(d, t) for d, t in pos], [Passage(d, t) for d, t in neg]))
    path = out_dir / EXPORT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"path": EXPORT_PATH, **write_lines(inp, examples, path)}


FORMAT = Format(help=f"DIR/{EXPORT_PATH}", accepts=accepts, read=read, write=write, export=export)
