"""Small BEIR folders cut from the bundled example, for tests whose point is not the corpus's size.

A test that needs a cold embedding (a Ray worker killed mid-stage, the same rows from two engines, a
private cache) pays for every passage it encodes; on CI's two busy cores the example's 1,200 passages at
256 tokens cost about two minutes each time. A cut keeps what those tests check (chunking, several
workers, resumption, equality) at a fraction of the work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from synth.core.checks import iter_lines


def cut_beir(src: Path, dst: Path, n_queries: int, n_docs: int, split: str = "train") -> Path:
    """``dst``: the last ``n_queries`` queries of ``src``'s train qrels, all their positives and the first other
    passages up to ``n_docs``, with the qrels written as ``qrels/<split>.tsv``. Deterministic: the same
    folder every time, so runs on it can be compared row for row."""
    lines = (src / "qrels" / "train.tsv").read_text().splitlines()
    qrels = [line.split("\t") for line in lines[1:] if line.strip()]
    keep = set(list(dict.fromkeys(q for q, _, _ in qrels))[-n_queries:])
    rows = [r for r in qrels if r[0] in keep]
    docs = [json.loads(line) for line in (src / "corpus.jsonl").read_text().splitlines()]
    positives = {d for _, d, _ in rows}
    chosen = [d for d in docs if d["_id"] in positives]
    chosen += [d for d in docs if d["_id"] not in positives][: n_docs - len(chosen)]
    queries = [json.loads(line) for line in (src / "queries.jsonl").read_text().splitlines()]
    (dst / "qrels").mkdir(parents=True)
    (dst / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in chosen))
    (dst / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in keep))
    header = "query-id\tcorpus-id\tscore\n"
    (dst / "qrels" / f"{split}.tsv").write_text(header + "".join("\t".join(r) + "\n" for r in rows))
    return dst


def _corpus_lines(src: Path) -> list[str]:
    """The lines of ``src``'s corpus.jsonl, or of corpus.jsonl.gz (the shared collections ship gzipped)."""
    plain = src / "corpus.jsonl"
    return [text for _, text in iter_lines(plain if plain.exists() else src / "corpus.jsonl.gz")]


def head_and_positives(src: Path, dst: Path, n_docs: int, split: str = "train") -> Path:
    """``dst``: ``src``'s first ``n_docs`` passages, then every other passage that is a positive in
    ``qrels/<split>.tsv`` (in corpus order); all the queries and that qrels file, unchanged. Every labelled pair
    of the split stays whole, the collection shrinks, and the first ``n_docs`` rows are the full corpus's."""
    qrels = (src / "qrels" / f"{split}.tsv").read_text(encoding="utf-8")
    positives = {line.split("\t")[1] for line in qrels.splitlines()[1:] if line.strip()}
    lines = _corpus_lines(src)
    rest = [line for line in lines[n_docs:] if json.loads(line)["_id"] in positives]
    (dst / "qrels").mkdir(parents=True)
    (dst / "corpus.jsonl").write_text("".join(line + "\n" for line in lines[:n_docs] + rest), encoding="utf-8")
    shutil.copy(src / "queries.jsonl", dst / "queries.jsonl")
    (dst / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return dst
