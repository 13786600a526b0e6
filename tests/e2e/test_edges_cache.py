"""Caches that check themselves, and one cache shared by concurrent runs (issue 14), through the real CLI.

The recipe is recipes/clean_hard_negatives.yaml on the bundled example (embeddings in several chunks,
the verdict store, the fn_risk report beside it), with short sequences to stay fast. Acceptance: after
the cache is damaged, and when two runs fill one empty cache at once, the runs exit 0 and write the
same rows as a clean run. Chunk files (gone after a finished run) are damaged in tests/integration/test_embed_cache.py.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from synth.core.files import save_array
from tests.conftest import REPO
from tests.support.edges import assert_kept, no_partials, one_line_error, snapshot

RECIPE = REPO / "recipes" / "clean_hard_negatives.yaml"
FAST = ["--set", "embed.chunk_rows=300", "--set", "embed.max_seq_length=32"]


def _run(synth_cli, cache: Path, out: Path, check: bool = True):
    return synth_cli("run", str(RECIPE), "--out", str(out), "--set", f"embed.cache_dir={cache}", *FAST, check=check)


def _rows(out: Path) -> dict[str, list[dict]]:
    ds = load_from_disk(str(out / "dataset"))
    return {name: ds[name].to_list() for name in ("triplets", "triplets_provenance")}


def _flat(proc) -> str:
    """The run's log with rich's line wrapping undone (a long record may span several screen lines)."""
    return re.sub(r"\s+", "", proc.stdout + proc.stderr)


def _no_temporaries(cache: Path) -> None:
    left = [p.name for p in cache.rglob("*") if p.name.endswith(".tmp")]
    assert not left, left


@pytest.fixture(scope="module")
def clean(synth_cli, tmp_path_factory):
    """Run A: a clean run into an empty cache."""
    root = tmp_path_factory.mktemp("clean")
    cache, out = root / "cache", root / "runs" / "a"
    _run(synth_cli, cache, out)
    return cache, _rows(out)


def test_a_damaged_cache_is_recomputed_with_a_warning_and_the_rows_stay_the_same(synth_cli, clean, tmp_path):
    cache, rows = clean
    emb = cache / "embeddings"
    (corpus_full,) = emb.glob("*/full-*-1200.npy")
    (query_full,) = emb.glob("*/full-*-150.npy")
    (report,) = cache.glob("judge/fn-risk-*.json")
    (store,) = cache.glob("judge/*/verdicts.sqlite")
    (cache / "notes.txt").write_text("the user's own file")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "keep.txt").write_text("foreign")

    # 1. the embeddings and the fit report: a matrix one row short (well-formed, checksummed), a
    #    truncated matrix, a report that is not JSON; the verdicts are intact, so the report is read
    save_array(corpus_full, np.load(corpus_full, mmap_mode="r")[:1199])
    query_full.write_bytes(query_full.read_bytes()[:5000])
    report.write_text('{"mode": "full", "trunc')
    before = snapshot(runs)
    proc = _run(synth_cli, cache, runs / "b", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    log = _flat(proc)
    assert log.count("damagedcachefile") == 3, proc.stdout[-3000:]
    for path, why in [
        (corpus_full, "1199rows,expected1200"),
        (query_full, "nochecksumfooter"),
        (report, "recomputingit"),
    ]:
        assert f"damagedcachefile{path}(" in log and why in log
    assert _rows(runs / "b") == rows
    assert_kept(before, runs)
    no_partials(runs)

    # 2. the verdict store: garbage bytes. Moved aside (kept), a fresh store, everything judged again
    garbage = b"this is not an SQLite database\n" * 200
    store.write_bytes(garbage)
    before = snapshot(runs)
    proc = _run(synth_cli, cache, runs / "c", check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    log = _flat(proc)
    assert log.count("damagedcachefile") == 1 and f"damagedcachefile{store}(" in log and "startingafreshone" in log
    (aside,) = store.parent.glob("verdicts.sqlite.corrupt-*")
    assert aside.read_bytes() == garbage
    assert _rows(runs / "c") == rows
    assert_kept(before, runs)
    no_partials(runs)
    assert (cache / "notes.txt").read_text() == "the user's own file"
    _no_temporaries(cache)

    # 3. the mended cache is trusted again: no warning, nothing encoded
    proc = _run(synth_cli, cache, runs / "d")
    assert "damagedcachefile" not in _flat(proc) and _rows(runs / "d") == rows


def test_two_runs_sharing_one_empty_cache_both_write_the_clean_rows(synth_cli, clean, tmp_path):
    cache, rows = clean[0].parent / "shared-cache", clean[1]
    outs = [tmp_path / "one", tmp_path / "two"]
    with ThreadPoolExecutor(2) as pool:  # two `synth run` processes started at the same time
        procs = list(pool.map(lambda out: _run(synth_cli, cache, out, check=False), outs))
    for proc, out in zip(procs, outs):
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "damagedcachefile" not in _flat(proc)
        assert _rows(out) == rows
    assert not list(cache.glob("embeddings/*/chunk-*")), "chunks outlived their full matrix"
    _no_temporaries(cache)
    no_partials(tmp_path)


def test_a_cache_directory_that_is_a_file_is_one_line(synth_cli, tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache should be")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    line = one_line_error(_run(synth_cli, blocker, out, check=False), 2)
    assert line.startswith("error: ") and f"cache directory {blocker}: not a folder" in line
    assert not out.exists()
    assert_kept(before, tmp_path)
    no_partials(tmp_path)
