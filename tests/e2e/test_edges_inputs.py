"""Hostile data files through the real CLI (issue 14): every reader (BEIR corpus, queries and qrels,
JSONL pairs, the Tevatron input of ``synth relabel``) stops a file that would crash a later stage with
exit 2 and one line naming ``file:line``, writes nothing, deletes nothing; and accepts a UTF-8 byte
order mark and CRLF line endings with the same rows as a plain file.

The data is a small slice of the bundled SciFact subset, so each good run embeds a few dozen texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.conftest import EXAMPLE
from tests.support.edges import assert_kept, no_partials, one_line_error, snapshot

N_QUERIES, N_EXTRA_DOCS = 8, 30
RECIPE = """name: edges-inputs
seed: 0
source: {source}
mine:
  n_negatives: 2
  sampler: {{kind: topk, range_min: 0, range_max: 10, pick: top}}
output: {{format: n-tuple}}
"""
CASCADE = """name: margin_only
stages:
  - kind: embedding_margin
    negative_below: 0.0
    false_negative_at_or_above: 0.0
"""


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _slice() -> tuple[list[dict], list[dict], list[tuple[str, str]]]:
    """(corpus, queries, qrels) of the first queries with a positive, their positives and some other docs."""
    corpus = {d["_id"]: d for d in _rows(EXAMPLE / "corpus.jsonl")}
    queries = {q["_id"]: q for q in _rows(EXAMPLE / "queries.jsonl")}
    qrels: list[tuple[str, str]] = []
    for line in (EXAMPLE / "qrels" / "train.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if int(s) > 0 and q in queries and d in corpus and len({x for x, _ in qrels} | {q}) <= N_QUERIES:
            qrels.append((q, d))
    docs = list(dict.fromkeys([d for _, d in qrels] + list(corpus)[:N_EXTRA_DOCS]))
    chosen = list(dict.fromkeys(q for q, _ in qrels))
    return [corpus[d] for d in docs], [queries[q] for q in chosen], qrels


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def make_beir(folder: Path) -> Path:
    corpus, queries, qrels = _slice()
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(_jsonl(corpus))
    (folder / "queries.jsonl").write_bytes(_jsonl(queries))
    tsv = "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)
    (folder / "qrels" / "train.tsv").write_bytes(tsv.encode())
    return folder


def make_pairs(folder: Path) -> Path:
    corpus, queries, qrels = _slice()
    text = {d["_id"]: d["text"] for d in corpus}
    query = {q["_id"]: q["text"] for q in queries}
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(_jsonl(corpus))
    (folder / "pairs.jsonl").write_bytes(_jsonl([{"anchor": query[q], "positive": text[d]} for q, d in qrels]))
    return folder


def make_tevatron(folder: Path) -> Path:
    corpus, queries, qrels = _slice()
    by_id = {d["_id"]: d for d in corpus}
    lines = []
    for i, q in enumerate(queries):
        pos = [d for x, d in qrels if x == q["_id"]]
        negs = [d for d in list(by_id)[N_QUERIES + 2 * i : N_QUERIES + 2 * i + 2] if d not in pos]
        passage = lambda d: {"docid": d, "title": by_id[d].get("title", ""), "text": by_id[d]["text"]}  # noqa: E731
        lines.append(
            {
                "query_id": q["_id"],
                "query": q["text"],
                "positive_passages": [passage(d) for d in pos],
                "negative_passages": [passage(d) for d in negs],
            }
        )
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes(_jsonl(lines))
    (folder / "judges.yaml").write_text(CASCADE)
    return folder


# target -> (builder, the file under test, the field a surrogate goes into; None for TSV)
TARGETS = {
    "corpus": (make_beir, "corpus.jsonl", "text"),
    "queries": (make_beir, "queries.jsonl", "text"),
    "qrels": (make_beir, "qrels/train.tsv", None),
    "pairs": (make_pairs, "pairs.jsonl", "anchor"),
    "tevatron": (make_tevatron, "train.jsonl", "query"),
}


def _cli(synth_cli, target: str, folder: Path, out: Path):
    if target == "tevatron":
        return synth_cli(
            "relabel",
            "--input",
            str(folder / "train.jsonl"),
            "--judges",
            str(folder / "judges.yaml"),
            "--out",
            str(out),
        )
    if target == "pairs":
        source = json.dumps({"kind": "jsonl", "path": "pairs.jsonl", "corpus": "corpus.jsonl"})
    else:
        source = json.dumps({"kind": "beir", "path": ".", "split": "train"})
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE.format(source=source))
    return synth_cli("run", str(recipe), "--out", str(out))


def _hostile(kind: str, lines: list[bytes], field: str | None) -> tuple[list[bytes], int]:
    """The file's lines with one made hostile, and the 1-based line the error must name."""
    bad = list(lines)
    if kind == "utf16":
        return [b"\n".join(lines).decode().encode("utf-16")], 1
    if kind == "surrogate":  # valid JSON; the string can never be written as UTF-8
        bad[1] = bad[1].replace(f'"{field}": "'.encode(), f'"{field}": "\\ud800 '.encode(), 1)
    elif kind == "deep":
        bad[1] = b"[" * 100_000
    elif kind == "latin1":
        bad[1] = bad[1][:-2] + "café".encode("latin-1") + bad[1][-2:]
    elif kind == "nul":
        bad[1] = bad[1][:1] + b"\x00" + bad[1][1:]
    assert bad[1] != lines[1]
    return bad, 2


CASES = [
    (t, k)
    for t in TARGETS
    for k in ("surrogate", "deep", "latin1", "utf16", "nul")
    if TARGETS[t][2] is not None or k in ("latin1", "utf16", "nul")
]


@pytest.mark.parametrize("target,kind", CASES)
def test_hostile_file_is_one_line_at_file_line(synth_cli, tmp_path, target, kind):
    build, name, field = TARGETS[target]
    folder = build(tmp_path / "data")
    (tmp_path / "notes.txt").write_text("a file synth must not touch\n")
    path = folder / name
    lines, line_no = _hostile(kind, path.read_bytes().split(b"\n"), field)
    path.write_bytes(b"\n".join(lines))
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    line = one_line_error(_cli(synth_cli, target, folder, out), 2)
    assert f"{path}:{line_no}: " in line, line
    expected = {
        "surrogate": "lone surrogate \\ud800",
        "deep": "nested at most 64 levels deep",
        "latin1": "not UTF-8 (byte 0xe9 at column",
        "utf16": "not UTF-8 (byte 0xff at column 1; the file starts with a UTF-16 byte order mark",
        "nul": "NUL byte at column 2",
    }[kind]
    assert expected in line, line
    if kind == "surrogate":
        assert f'field "{field}"' in line, line
    assert not out.exists()
    no_partials(tmp_path)
    assert_kept(before, tmp_path)


def _result(target: str, out: Path) -> list:
    if target == "tevatron":
        return _rows(out / "data.jsonl")
    return load_from_disk(str(out / "dataset"))["triplets"].to_list()


@pytest.fixture(scope="module")
def baselines(synth_cli, tmp_path_factory) -> dict[str, list]:
    """The rows each reader gives on plain files (one BEIR run serves corpus, queries and qrels)."""
    found = {}
    for target in ("corpus", "pairs", "tevatron"):
        root = tmp_path_factory.mktemp(f"plain-{target}")
        folder = TARGETS[target][0](root / "data")
        proc = _cli(synth_cli, target, folder, root / "out")
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[target] = _result(target, root / "out")
        assert found[target]
    return found


@pytest.mark.parametrize("target", ["beir", "pairs", "tevatron"])
@pytest.mark.parametrize("variant", ["bom", "crlf"])
def test_bom_and_crlf_give_the_same_rows(synth_cli, tmp_path, baselines, target, variant):
    """A byte order mark on line 1 / CRLF endings in every file of the source: the same rows as plain files."""
    key = "corpus" if target == "beir" else target
    folder = TARGETS[key][0](tmp_path / "data")
    files = [p for p in folder.rglob("*") if p.suffix in (".jsonl", ".tsv")]
    for p in files:
        data = p.read_bytes()
        p.write_bytes(b"\xef\xbb\xbf" + data if variant == "bom" else data.replace(b"\n", b"\r\n"))
    out = tmp_path / "out"
    proc = _cli(synth_cli, key, folder, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _result(key, out) == baselines[key]
    no_partials(tmp_path)


def test_deep_but_legal_nesting_in_an_ignored_field_is_fine(synth_cli, tmp_path):
    """The depth cap is on real nesting: brackets inside strings and 60 levels of metadata still run."""
    folder = make_beir(tmp_path / "data")
    rows = _rows(folder / "corpus.jsonl")
    rows[0]["meta"] = json.loads("[" * 60 + "]" * 60)
    rows[1]["text"] += " " + "[" * 500
    (folder / "corpus.jsonl").write_bytes(_jsonl(rows))
    proc = _cli(synth_cli, "corpus", folder, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
