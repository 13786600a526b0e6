"""Documents only (``kind: corpus``): no queries and no qrels, the input of a zero-label run.

``path`` is one of (``format: auto`` tells them apart; set ``format`` to say which):

* ``beir``: a BEIR ``corpus.jsonl[.gz]``, or a folder holding one (``_id``, ``title``, ``text``);
* ``jsonl``: any JSONL file, with the field names ``id_field``, ``title_field`` (optional, may be null) and
  ``text_field``;
* ``parquet``: a Parquet file with columns of the same names (string columns; a null title is no title);
* ``folder``: every ``*.txt`` / ``*.md`` file under the folder, in path order; the id is the path relative
  to the folder (``/``-separated), the title the first Markdown heading (``# ...``, taken out of the text)
  or else the file stem; the text is the file's non-blank lines joined by ``\\n``;
* ``hf``: a Hugging Face dataset written by ``save_to_disk`` (``split`` picks from a DatasetDict), or a
  Hub id already in the local HF cache: it is opened with ``HF_HUB_OFFLINE=1``, never downloaded.

The checks of every other reader apply: files are read line by line through ``iter_lines`` (the
``SYNTH_MAX_LINE_BYTES`` cap, UTF-8 and NUL checks at ``file:line``), a missing or non-string field is an
``InputError`` at its ``file:line`` (``path:row N`` for Parquet and HF), a duplicate id names both places,
and a document whose title and text are both blank is counted (``empty_doc``) and left out.

Chunking (``chunk``, off by default) cuts a long document into windows of ``max_tokens`` tokens that
overlap by ``overlap``. Tokens are whitespace-separated words, not the embedder's subword tokens: the
cut is the same whatever the model, costs nothing, and a chunk never ends inside a word. MiniLM's
WordPiece makes about 1.3 tokens of an English word, so keep ``max_tokens`` near ``embed.max_seq_length``
/ 1.3. A chunk is a slice of the passage as embedded (title + text): its id is ``DOCID#c<k>``, and the
corpus keeps its document id (``Corpus.doc_ids``) and character offset (``Corpus.offsets``), so
``passage[offset:offset + len(chunk)] == chunk``. A document that fits in one chunk keeps its own id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from synth.core.checks import UniqueIds, iter_json_objects, iter_lines, json_type, one_line, optional_str
from synth.core.checks import passage_text, require_str
from synth.core.errors import InputError, UserError
from synth.core.records import Corpus, Findings, Queries, SourceData
from synth.core.strict import StrictModel

FORMATS = ("beir", "jsonl", "parquet", "folder", "hf")
TEXT_SUFFIXES = (".txt", ".md")
CHUNK_MARK = "#c"


class ChunkConfig(StrictModel):
    max_tokens: int = Field(200, gt=0, description="words per chunk (whitespace tokens, see synth/sources/corpus.py)")
    overlap: int = Field(32, ge=0, description="words shared by consecutive chunks of one document")

    @model_validator(mode="after")
    def _overlap(self) -> ChunkConfig:
        if self.overlap >= self.max_tokens:
            raise ValueError(f"overlap ({self.overlap}) must be less than max_tokens ({self.max_tokens})")
        return self


class CorpusSource(StrictModel):
    kind: Literal["corpus"] = "corpus"
    license: str = Field(
        "unknown",
        description="licence of the corpus (an SPDX-style id such as 'cc-by-4.0'); copied to the report and the card",
    )
    path: str = Field(
        description="corpus.jsonl[.gz], a JSONL or Parquet file, a folder of .txt/.md files, a save_to_disk folder "
        "(relative to the recipe), or a Hub dataset id already in the local HF cache"
    )
    format: Literal["auto", "beir", "jsonl", "parquet", "folder", "hf"] = Field(
        "auto", description="auto: from the path (see synth/sources/corpus.py)"
    )
    id_field: str = Field("_id", description="jsonl / parquet / hf: the field holding the document id")
    title_field: str | None = Field("title", description="jsonl / parquet / hf: the title field; null: none")
    text_field: str = Field("text", description="jsonl / parquet / hf: the field holding the text")
    split: str = Field("train", description="hf: the split of a DatasetDict")
    chunk: ChunkConfig | None = Field(None, description="cut long documents into overlapping chunks; null: whole")


Row = tuple[str, str, str, str]  # (where, doc id, title, text)


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        if any((path / f).is_file() for f in ("corpus.jsonl", "corpus.jsonl.gz")):
            return "beir"
        if any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf"
        return "folder"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return "jsonl"
    if not path.exists() and not path.is_absolute() and not str(path).startswith((".", "~")):
        return "hf"  # a Hub id: read from the local cache only
    raise InputError(str(path), f"expected one of {', '.join(FORMATS)} (set source.format), got {path.name!r}")


def _json_rows(path: Path, id_field: str, title_field: str | None, text_field: str) -> Iterator[Row]:
    for where, obj in iter_json_objects(path):
        doc_id = require_str(obj, id_field, where, non_empty=True)
        text = require_str(obj, text_field, where)
        title = optional_str(obj, title_field, where) if title_field else ""
        yield where, doc_id, title, text


def _beir_rows(path: Path) -> Iterator[Row]:
    if path.is_dir():
        from synth.formats.beir import find_one

        path = find_one(path, "corpus")
    return _json_rows(path, "_id", "title", "text")


def _table_rows(batches, path: str, cfg: CorpusSource, columns: list[str]) -> Iterator[Row]:
    """Rows of a columnar source (Parquet, HF): strings checked per cell, ``path:row N`` (0-based)."""
    wanted = [cfg.id_field, cfg.text_field] + ([cfg.title_field] if cfg.title_field else [])
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise InputError(path, f"expected columns {wanted}, got {columns} (missing {missing})")
    row = 0
    for batch in batches(wanted):
        titles = batch[cfg.title_field] if cfg.title_field else [None] * len(batch[cfg.id_field])
        for doc_id, text, title in zip(batch[cfg.id_field], batch[cfg.text_field], titles):
            where = f"{path}:row {row}"
            for column, value, nullable in ((cfg.id_field, doc_id, False), (cfg.text_field, text, False)):
                if not isinstance(value, str) or (column == cfg.id_field and not value.strip()):
                    got = json_type(value) if not isinstance(value, str) else "an empty string"
                    raise InputError(where, f'expected a non-empty string in column "{column}", got {got}')
            if title is not None and not isinstance(title, str):
                raise InputError(
                    where, f'expected a string or null in column "{cfg.title_field}", got {json_type(title)}'
                )
            yield where, doc_id, title or "", text
            row += 1


def _parquet_rows(path: Path, cfg: CorpusSource) -> Iterator[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        columns = table.schema_arrow.names
    except Exception as exc:  # noqa: BLE001 - not Parquet, truncated, ...: one line
        raise InputError(str(path), f"expected a Parquet file, got {one_line(exc)}") from None

    def batches(wanted):
        for b in table.iter_batches(batch_size=1024, columns=wanted):
            yield b.to_pydict()

    return _table_rows(batches, str(path), cfg, columns)


def _open_hf(path: str, split: str):
    import datasets

    if Path(path).is_dir():
        try:
            ds = datasets.load_from_disk(path)
        except Exception as exc:  # noqa: BLE001 - any failure here means "not a saved dataset"
            raise InputError(path, f"expected a folder written by save_to_disk, got {one_line(exc)}") from None
    else:  # the local cache only: a corpus is never downloaded behind the user's back
        before = (os.environ.get("HF_HUB_OFFLINE"), datasets.config.HF_HUB_OFFLINE)
        os.environ["HF_HUB_OFFLINE"], datasets.config.HF_HUB_OFFLINE = "1", True
        try:
            ds = datasets.load_dataset(path, split=split)
        except Exception as exc:  # noqa: BLE001 - not cached, unknown id, bad split: one line, no traceback
            raise UserError(
                f"{path}: expected a Hugging Face dataset in the local cache (never downloaded; HF_HUB_OFFLINE) "
                f"with split {split!r}, got {one_line(exc)}"
            ) from None
        finally:
            if before[0] is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = before[0]
            datasets.config.HF_HUB_OFFLINE = before[1]
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(path, f"expected split {split!r}, got splits {sorted(ds)}")
        ds = ds[split]
    return ds


def _hf_rows(cfg: CorpusSource) -> Iterator[Row]:
    ds = _open_hf(cfg.path, cfg.split)

    def batches(wanted):
        yield from ds.select_columns(wanted).with_format(None).iter(batch_size=1024)

    return _table_rows(batches, cfg.path, cfg, list(ds.column_names))


_HEADING = re.compile(r"#{1,6}\s+(.*\S)\s*#*\s*$")


def _folder_rows(folder: Path) -> Iterator[Row]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(str(folder), "expected .txt or .md files under the folder, got none")
    for path in files:
        lines = [text for _, text in iter_lines(path)]
        title = path.stem
        if path.suffix.lower() == ".md":
            for i, line in enumerate(lines):
                heading = _HEADING.match(line.strip())
                if heading:
                    title = heading.group(1).strip()
                    del lines[i]
                    break
        yield str(path), path.relative_to(folder).as_posix(), title, "\n".join(lines)


def iter_documents(cfg: CorpusSource) -> Iterator[Row]:
    path = Path(cfg.path)
    fmt = detect_format(path) if cfg.format == "auto" else cfg.format
    if fmt == "hf":
        return _hf_rows(cfg)
    if fmt == "folder":
        if not path.is_dir():
            raise InputError(
                str(path), f"expected a folder of .txt/.md files, got {'a file' if path.exists() else 'nothing'}"
            )
        return _folder_rows(path)
    if fmt == "beir":
        return _beir_rows(path)
    if not path.is_file():
        raise InputError(str(path), f"expected a {fmt} file, got {'a folder' if path.exists() else 'nothing'}")
    if fmt == "parquet":
        return _parquet_rows(path, cfg)
    return _json_rows(path, cfg.id_field, cfg.title_field, cfg.text_field)


_WORD = re.compile(r"\S+")


def chunk_spans(text: str, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of windows of ``max_tokens`` words, consecutive windows sharing
    ``overlap`` words; one span for a text of at most ``max_tokens`` words."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if len(words) <= max_tokens:
        return [(0, len(text))]
    spans, step = [], max_tokens - overlap
    for first in range(0, len(words), step):
        last = min(first + max_tokens, len(words)) - 1
        spans.append((words[first][0], words[last][1]))
        if last == len(words) - 1:
            break
    return spans


def load_corpus(config: CorpusSource) -> SourceData:
    findings = Findings()
    ids: list[str] = []
    texts: list[str] = []
    doc_ids: list[str] = []
    offsets: list[int] = []
    unique = UniqueIds("document id")
    chunk_ids: dict[str, str] = {}  # chunk id -> where its document is
    for where, doc_id, title, text in iter_documents(config):
        unique.add(doc_id, where)
        passage = passage_text(title, text)
        if not passage:
            findings.warn("empty_doc", where)
            continue
        spans = [(0, len(passage))] if config.chunk is None else chunk_spans(passage, **config.chunk.model_dump())
        for k, (start, end) in enumerate(spans):
            chunk_id = doc_id if len(spans) == 1 else f"{doc_id}{CHUNK_MARK}{k}"
            if chunk_id in chunk_ids and len(spans) > 1:
                raise InputError(
                    where, f"expected chunk id {chunk_id!r} to be free, got it taken ({chunk_ids[chunk_id]})"
                )
            chunk_ids[chunk_id] = where
            ids.append(chunk_id)
            texts.append(passage[start:end])
            doc_ids.append(doc_id)
            offsets.append(start)
    clash = next((i for i, d in zip(ids, doc_ids) if i != d and i in unique.first), None)
    if clash is not None:
        raise InputError(chunk_ids[clash], f"expected chunk id {clash!r} to be free, got a document with that id")
    if not ids:
        raise InputError(config.path, "expected at least one document with a non-empty title or text, got none")
    corpus = Corpus(ids=ids, texts=texts, doc_ids=doc_ids, offsets=offsets)
    return SourceData(corpus=corpus, queries=Queries(ids=[], texts=[]), qrels={}, findings=findings)
