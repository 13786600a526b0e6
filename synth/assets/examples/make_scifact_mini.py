"""Build examples/scifact-mini: a small, deterministic BEIR-layout subset of SciFact.

    python examples/make_scifact_mini.py [SCIFACT_DIR] [--out DIR]

SCIFACT_DIR defaults to ../shared/data/scifact relative to the repository root. The subset:
the first 150 train queries (by first appearance in qrels/train.tsv) with all their train positives,
plus passages drawn with random.Random(0) from the rest of the corpus, leaving out every test
positive, until the corpus holds 1,200 docs. Corpus and query lines are copied byte for byte, in the
order of the source files; qrels rows keep their order and get the BEIR header.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

N_QUERIES = 150
N_DOCS = 1200
SEED = 0
ROOT = Path(__file__).resolve().parents[1]


def _lines(path: Path):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip("\r\n")


def _qrels(path: Path) -> list[tuple[str, str, str]]:
    rows = [tuple(line.split("\t")) for line in _lines(path)]
    return [r for r in rows if r[0] != "query-id"]


def make(src: Path, out: Path) -> dict:
    corpus_path = next(p for p in (src / "corpus.jsonl", src / "corpus.jsonl.gz") if p.is_file())
    train = _qrels(src / "qrels" / "train.tsv")
    test_docs = {doc for _, doc, _ in _qrels(src / "qrels" / "test.tsv")}

    chosen: list[str] = []
    for query_id, _, _ in train:
        if query_id not in chosen:
            chosen.append(query_id)
        if len(chosen) == N_QUERIES:
            break
    keep_queries = set(chosen)
    rows = [r for r in train if r[0] in keep_queries]
    positives = {doc for _, doc, _ in rows}

    corpus = [(json.loads(line)["_id"], line) for line in _lines(corpus_path)]
    rest = [doc for doc, _ in corpus if doc not in positives and doc not in test_docs]
    filler = set(random.Random(SEED).sample(rest, N_DOCS - len(positives)))
    keep_docs = positives | filler

    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for doc, line in corpus:
            if doc in keep_docs:
                fh.write(line + "\n")
    n_queries = 0
    with open(out / "queries.jsonl", "w", encoding="utf-8", newline="\n") as fh:
        for line in _lines(src / "queries.jsonl"):
            if json.loads(line)["_id"] in keep_queries:
                fh.write(line + "\n")
                n_queries += 1
    with open(out / "qrels" / "train.tsv", "w", encoding="utf-8", newline="\n") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for row in rows:
            fh.write("\t".join(row) + "\n")
    return {"docs": len(keep_docs), "positives": len(positives), "queries": n_queries, "pairs": len(rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--out", default=str(ROOT / "examples" / "scifact-mini"))
    args = parser.parse_args(argv)
    print(make(Path(args.src), Path(args.out)))


if __name__ == "__main__":
    main()
