"""Input checks shared by every source loader.

Policy (the full table is in ``docs/input-checks.md``):

* A finding that means the file is not what it claims to be raises ``InputError`` with ``file:line``
  and a one-line ``expected <what>, got <what>`` message: bytes that are not UTF-8, a line that is
  not a JSON object, a missing or non-string required field, a duplicate id, a malformed qrels row,
  and a source with no usable (query, positive) pair at all.
* A finding about one item that can be skipped without changing the meaning of the rest is a
  warning: it is counted in ``Findings`` under a stable key and the item is dropped.

Files are read as bytes, one line at a time (never the whole file as one string), and each line is
decoded on its own, so a bad byte is reported with its line number. Only ``\\n`` ends a line, so
U+2028 and friends inside a JSON string never split a record; a trailing ``\\r`` (CRLF files) is
removed, a UTF-8 byte order mark on line 1 is ignored and blank lines are skipped.

What would pass ``json.loads`` and crash later is caught here too, at its ``file:line``: a NUL byte
(a binary or UTF-16 file), a JSON line nested deeper than ``MAX_JSON_DEPTH`` (RecursionError in
``json.loads`` or in any later walk), a number too long to convert, and a lone surrogate escape
(``"\\ud800"`` is valid JSON but can never be written as UTF-8).
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from synth.core.errors import InputError
from synth.core.limits import limit, over_limit

# -- reading lines --------------------------------------------------------------------------------


def require_file(path: str | Path, what: str = "a file") -> Path:
    p = Path(path)
    if not p.is_file():
        got = "a folder" if p.is_dir() else "nothing (no such file)"
        raise InputError(str(p), f"expected {what}, got {got}")
    return p


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every non-blank line; 1-based, counted on the raw file.

    ``.gz`` files are decompressed on the fly (line numbers are those of the decompressed text). A line
    longer than ``limit("max_line_bytes")`` stops the read at its ``file:line``: each line is read with
    ``readline(bound + 1)``, so memory stays bounded even for one huge line in a small gzip.
    """
    p = require_file(path)
    opener = gzip.open if p.name.endswith(".gz") else open
    bound = limit("max_line_bytes")
    line_no = 0
    try:
        with opener(p, "rb") as fh:
            while raw := fh.readline(bound + 1):
                line_no += 1
                if len(raw) > bound and not (len(raw) == bound + 1 and raw.endswith(b"\n")):
                    raise over_limit("max_line_bytes", f"{p}:{line_no}", f"more than {bound:,} bytes")
                if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                text = decode_line(raw.rstrip(b"\r\n"), f"{p}:{line_no}", first=line_no == 1)
                if text.strip():
                    yield line_no, text
    except (OSError, EOFError, zlib.error) as exc:
        where = f"{p}:{line_no + 1}" if line_no else str(p)
        raise InputError(
            where, f"expected a readable {'gzip' if opener is gzip.open else 'text'} file, got {one_line(exc)}"
        ) from None


def decode_line(raw: bytes, where: str, first: bool = False) -> str:
    """One line's bytes as text: UTF-8 without NUL bytes, else an ``InputError`` naming the column."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8")) + 1  # characters, as an editor counts them
        utf16 = first and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        hint = "; the file starts with a UTF-16 byte order mark, save it as UTF-8" if utf16 else ""
        raise InputError(where, f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}{hint})") from None
    if "\0" in text:  # valid UTF-8, but a binary or UTF-16 file; ids and texts must never hold one
        raise InputError(
            where, f"expected text, got a NUL byte at column {text.index(chr(0)) + 1} (a binary or UTF-16 file?)"
        )
    return text


MAX_JSON_DEPTH = 64  # far above any record format synth reads; keeps every later recursive walk safe
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def json_depth(text: str) -> int:
    """The deepest bracket nesting of one JSON text, brackets inside strings not counted."""
    depth = deepest = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_json_line(text: str, where: str):
    """``json.loads`` of one line, with every failure (and every value that would fail later) as an ``InputError``."""
    # Counting brackets is C-speed; the exact scan runs only on the rare line that could be too deep.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and (depth := json_depth(text)) > MAX_JSON_DEPTH:
        raise InputError(where, f"expected JSON nested at most {MAX_JSON_DEPTH} levels deep, got {depth} levels")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(where, f"expected a JSON object, got invalid JSON ({exc.msg} at column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(where, f"expected a JSON object, got unreadable JSON ({one_line(exc)})") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):  # only then can a lone surrogate be in there
        bad = _lone_surrogate(obj, "")
        if bad is not None:
            field, char = bad
            raise InputError(
                where,
                f"expected Unicode text in {field}, got a lone surrogate "
                f"\\u{ord(char):04x} (valid JSON, but not writable as UTF-8)",
            )
    return obj


def _lone_surrogate(value, path: str) -> tuple[str, str] | None:
    """(where in the object, the surrogate) of the first string in ``value`` that is not valid Unicode."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"field {quoted(path)}" if path else "the line"), value[exc.start]
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            bad_key = _lone_surrogate(key, "x")
            if bad_key:  # the key itself is not valid Unicode: name its parent, never print the key
                return (f"a key of field {quoted(path)}" if path else "a key"), bad_key[1]
            found = _lone_surrogate(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{i}]")
            if found:
                return found
    return None


def quoted(value: str) -> str:
    """A user string inside a one-line message: quoted, with line breaks and non-ASCII escaped."""
    return json.dumps(value)


def iter_json_objects(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", object)`` for every non-blank line of a JSONL file."""
    for line_no, text in iter_lines(path):
        where = f"{path}:{line_no}"
        obj = parse_json_line(text, where)
        if not isinstance(obj, dict):
            raise InputError(where, f"expected a JSON object, got {json_type(obj)}")
        yield where, obj


# -- fields ---------------------------------------------------------------------------------------


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def require_str(obj: dict, key: str, where: str, *, non_empty: bool = False) -> str:
    """The string ``obj[key]``; a missing or non-string value (or an empty one, if asked) is an error."""
    if key not in obj:
        raise InputError(where, f'expected string field "{key}", got no such field (fields: {_keys(obj)})')
    value = obj[key]
    if not isinstance(value, str):
        raise InputError(where, f'expected string field "{key}", got {json_type(value)}')
    if non_empty and not value.strip():
        raise InputError(where, f'expected non-empty string field "{key}", got an empty string')
    return value


def optional_str(obj: dict, key: str, where: str) -> str:
    """``obj[key]`` if it is a string, ``""`` if missing or null; any other type is an error."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(where, f'expected string or null field "{key}", got {json_type(value)}')
    return value


def passage_text(title: str, text: str) -> str:
    """The passage as embedded: ``title + " " + text``, just the text when the title is empty; stripped."""
    title, text = title.strip(), text.strip()
    return f"{title} {text}" if title and text else (title or text)


class UniqueIds:
    """Remembers where each id was first seen; a second occurrence is an error naming both lines."""

    def __init__(self, what: str = "_id"):
        self.what = what
        self.first: dict[str, str] = {}  # id -> line of its first occurrence

    def add(self, item_id: str, where: str) -> None:
        if item_id in self.first:
            line = self.first[item_id]
            raise InputError(
                where, f"expected a unique {self.what}, got duplicate {quoted(item_id)} (first on line {line})"
            )
        self.first[item_id] = where.rsplit(":", 1)[-1]


# -- qrels ----------------------------------------------------------------------------------------

QRELS_HEADER = ("query-id", "corpus-id", "score")


def iter_qrels(path: str | Path) -> Iterator[tuple[str, str, str, int]]:
    """Yield ``("file:line", query_id, doc_id, score)`` for each row of a BEIR qrels TSV.

    An optional header line ``query-id<TAB>corpus-id<TAB>score`` (first line only) is skipped.
    """
    first = True
    for line_no, text in iter_lines(path):
        where = f"{path}:{line_no}"
        cols = [c.strip() for c in text.split("\t")]
        if first and tuple(c.lower() for c in cols) == QRELS_HEADER:
            first = False
            continue
        first = False
        if len(cols) != 3:
            hint = " (space-separated? BEIR qrels use tabs)" if len(cols) == 1 and " " in text.strip() else ""
            raise InputError(
                where, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}{hint}"
            )
        query_id, doc_id, score = cols
        if not query_id or not doc_id:
            raise InputError(where, f"expected non-empty query-id and corpus-id, got {text.strip()!r}")
        try:
            grade = int(score)
        except ValueError:
            raise InputError(where, f"expected an integer score, got {score!r}") from None
        yield where, query_id, doc_id, grade


# -- misc -----------------------------------------------------------------------------------------


def _keys(obj: dict, limit: int = 6) -> str:
    keys = list(obj)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return (shown + ", ...") if len(keys) > limit else (shown or "none")


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__
