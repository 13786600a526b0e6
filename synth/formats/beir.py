"""BEIR folder, the evaluation-set form a run writes with ``output.files: [beir]`` (``export``):
``corpus.jsonl`` (the whole corpus), ``queries.jsonl`` (the queries of the rows) and ``qrels/train.tsv``
(their positives, relabelled false negatives included).

Reading a BEIR folder is the ``beir`` source kind (``synth/sources/beir.py``): a source, with its own
checks and findings, rather than a relabel input.
"""

from __future__ import annotations

import json
from pathlib import Path

from synth.core.files import atomic_file
from synth.core.records import Corpus
from synth.formats.base import Format, Group

EXPORT_PATH = "beir"  # a run's folder, relative to its output folder


def _write_lines(path: Path, lines) -> int:
    n = 0
    with atomic_file(path, text=True) as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    return n


def export(groups: list[Group], corpus: Corpus, out_dir: Path) -> dict:
    """Passages are written as embedded (title + text in ``text``, empty ``title``)."""
    folder = out_dir / EXPORT_PATH
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    docs = _write_lines(
        folder / "corpus.jsonl",
        (json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) for d, t in zip(corpus.ids, corpus.texts)),
    )
    queries = _write_lines(
        folder / "queries.jsonl", (json.dumps({"_id": qid, "text": q}, ensure_ascii=False) for qid, q, _, _ in groups)
    )
    qrels = (
        _write_lines(
            folder / "qrels" / "train.tsv",
            ["query-id\tcorpus-id\tscore"] + [f"{qid}\t{d}\t1" for qid, _, pos, _ in groups for d, _ in pos],
        )
        - 1
    )
    return {"path": EXPORT_PATH, "corpus": docs, "queries": queries, "qrels": qrels}


FORMAT = Format(
    help=f"DIR/{EXPORT_PATH}: corpus.jsonl, queries.jsonl, qrels/train.tsv, the evaluation-set form", export=export
)
