"""The chunked embedding cache: resume after a kill, stale chunks never reused, prompts keyed, damaged
files recomputed with a warning, and one cache shared by concurrent runs."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from synth.core.files import load_array, save_array
from synth.embed import BUNDLED_MODEL, EmbedStats, Encoder, embed_texts, text_hash
from synth.core.errors import UserError

TEXTS = [f"passage number {i} about topic {i % 17} and subject {i % 5}" for i in range(600)]
CHUNK = 50


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(BUNDLED_MODEL, max_seq_length=32, batch_size=16, normalize=True, device="cpu")


@pytest.fixture(scope="module")
def reference(encoder) -> np.ndarray:
    return encoder.encode(TEXTS, "")


def _chunks(cache: Path) -> list[Path]:
    return sorted(cache.glob("embeddings/*/chunk-*.npy"))


@pytest.mark.slow  # encodes the reference corpus (~35 s), then again
def test_killed_run_resumes_at_chunk_granularity(tmp_path, encoder, reference):
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        from synth.embed import BUNDLED_MODEL, Encoder, embed_texts
        texts = [f"passage number {{i}} about topic {{i % 17}} and subject {{i % 5}}" for i in range(600)]
        enc = Encoder(BUNDLED_MODEL, max_seq_length=32, batch_size=16, normalize=True, device="cpu")
        embed_texts(enc, texts, "", {str(cache)!r}, {CHUNK})
    """)
    env = {**os.environ, "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 300
    while len(_chunks(cache)) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = _chunks(cache)
    assert 3 <= len(done) < len(TEXTS) // CHUNK, "the kill must land mid-way"
    assert not list(cache.glob("embeddings/*/full-*.npy"))

    stats = EmbedStats()
    emb = embed_texts(encoder, TEXTS, "", cache, CHUNK, stats=stats)
    assert stats.chunks_reused == len(done)  # finished chunks were not recomputed
    assert stats.chunks_total == len(TEXTS) // CHUNK
    np.testing.assert_allclose(np.asarray(emb), reference, atol=1e-5)

    again = EmbedStats()
    embed_texts(encoder, TEXTS, "", cache, CHUNK, stats=again)
    assert again.chunks_reused == again.chunks_total and again.device == "none"  # model never needed


@pytest.mark.slow  # encodes the reference corpus (~35 s), then again
def test_stale_cache_is_never_reused(tmp_path, encoder, reference):
    cache = tmp_path / "cache"
    embed_texts(encoder, TEXTS, "", cache, CHUNK)
    changed = list(TEXTS)
    changed[250] = "a completely different passage about volcanoes"
    stats = EmbedStats()
    emb = np.asarray(embed_texts(encoder, changed, "", cache, CHUNK, stats=stats))
    assert not np.allclose(emb[250], reference[250])
    np.testing.assert_allclose(emb[250], encoder.encode([changed[250]], "")[0], atol=1e-5)
    np.testing.assert_allclose(emb[:250], reference[:250], atol=1e-5)


def test_prompt_and_settings_are_part_of_the_key(tmp_path, encoder):
    cache = tmp_path / "cache"
    texts = TEXTS[:50]
    plain = np.asarray(embed_texts(encoder, texts, "", cache, CHUNK))
    prompted = np.asarray(embed_texts(encoder, texts, "query: ", cache, CHUNK))
    assert not np.allclose(plain, prompted)
    longer = Encoder(BUNDLED_MODEL, max_seq_length=64, batch_size=16, normalize=True, device="cpu")
    assert longer.setting_key("") != encoder.setting_key("")
    unnormalised = Encoder(BUNDLED_MODEL, max_seq_length=32, batch_size=16, normalize=False, device="cpu")
    assert unnormalised.setting_key("") != encoder.setting_key("")
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)


# -- caches that check themselves (issue 14) --------------------------------------------------------
def _chunk_path(cache: Path, encoder: Encoder, texts: list[str], i: int) -> Path:
    folder = cache / "embeddings" / encoder.setting_key("")
    return folder / f"chunk-{i:06d}-{text_hash(texts[i * CHUNK : (i + 1) * CHUNK])}.npy"


def _seed_chunks(cache: Path, encoder: Encoder, texts: list[str], reference: np.ndarray) -> list[Path]:
    """The chunk files a run killed just before assembly leaves, written by the cache's own writer."""
    paths = [_chunk_path(cache, encoder, texts, i) for i in range(len(texts) // CHUNK)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        save_array(p, reference[i * CHUNK : (i + 1) * CHUNK])
    return paths


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "synth.cache"]


@pytest.mark.slow  # encodes the reference corpus (~35 s), then again
def test_damaged_chunks_are_recomputed_with_one_warning_each(tmp_path, encoder, reference, caplog):
    cache, texts = tmp_path / "cache", TEXTS[:300]
    paths = _seed_chunks(cache, encoder, texts, reference)
    whole = paths[1].read_bytes()
    paths[1].write_bytes(whole[: len(whole) // 2])  # truncated
    save_array(paths[2], reference[2 * CHUNK : 3 * CHUNK - 1])  # a whole file, one row short
    flipped = bytearray(paths[3].read_bytes())
    flipped[300] ^= 0xFF  # a bit flip in the data
    paths[3].write_bytes(bytes(flipped))
    np.save(paths[4], reference[4 * CHUNK : 5 * CHUNK])  # plain .npy: no checksum to trust
    stats = EmbedStats()
    with caplog.at_level(logging.WARNING):
        emb = embed_texts(encoder, texts, "", cache, CHUNK, stats=stats)
    np.testing.assert_allclose(np.asarray(emb), reference[:300], atol=1e-5)
    assert stats.chunks_reused == 2 and stats.chunks_total == 6
    warned = _warnings(caplog)
    assert len(warned) == 4, warned
    for path, why in [
        (paths[1], "no checksum footer"),
        (paths[2], f"{CHUNK - 1} rows, expected {CHUNK}"),
        (paths[3], "checksum mismatch"),
        (paths[4], "no checksum footer"),
    ]:
        assert any(str(path) in w and why in w and "recomputing" in w for w in warned), (why, warned)
    assert all("\n" not in w for w in warned)


@pytest.mark.slow  # encodes the reference corpus (~35 s), then again
@pytest.mark.parametrize("damage", ["truncated", "one_row_short", "garbage"])
def test_a_damaged_full_matrix_is_recomputed(tmp_path, encoder, reference, caplog, damage):
    cache, texts = tmp_path / "cache", TEXTS[:100]
    _seed_chunks(cache, encoder, texts, reference)
    first = EmbedStats()
    embed_texts(encoder, texts, "", cache, CHUNK, stats=first)
    assert first.chunks_reused == 2 and first.device == "none"  # assembled from the chunks, nothing encoded
    (full,) = cache.glob("embeddings/*/full-*.npy")
    if damage == "truncated":
        full.write_bytes(full.read_bytes()[:1000])
    elif damage == "one_row_short":  # a well-formed file with a valid checksum, for 99 of the 100 texts
        save_array(full, reference[:99])
    else:
        full.write_bytes(os.urandom(full.stat().st_size))
    stats = EmbedStats()
    with caplog.at_level(logging.WARNING):
        emb = embed_texts(encoder, texts, "", cache, CHUNK, stats=stats)
    np.testing.assert_allclose(np.asarray(emb), reference[:100], atol=1e-5)
    assert stats.chunks_reused == 0 and stats.device == "cpu"  # the chunks were gone: encoded again
    warned = _warnings(caplog)
    assert len(warned) == 1 and str(full) in warned[0], warned
    if damage == "one_row_short":
        assert "99 rows, expected 100" in warned[0]
    assert load_array(full, rows=100) is not None  # mended on disk: the next run reuses it
    assert not [p.name for p in full.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_cache_directory_that_is_a_file_is_a_user_error(tmp_path, encoder):
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match=f"cache directory {blocker}: not a folder"):
        embed_texts(encoder, TEXTS[:10], "", blocker, CHUNK)
    assert blocker.read_text() == "not a folder"


def _concurrent_run(cache: str, out: str, barrier) -> None:
    warned: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warned.append(record.getMessage())

    logging.getLogger().addHandler(Keep())
    enc = Encoder(BUNDLED_MODEL, max_seq_length=32, batch_size=16, normalize=True, device="cpu")
    enc.model()  # load first, so the processes encode at the same time
    barrier.wait(timeout=600)
    emb = embed_texts(enc, TEXTS[:300], "", cache, CHUNK // 2)
    np.save(out, np.asarray(emb))
    Path(out + ".warnings").write_text("\n".join(warned))


@pytest.mark.slow  # encodes the reference corpus (~35 s), then again
def test_concurrent_runs_on_one_empty_cache(tmp_path, reference):
    """Two processes fill one empty cache at once: each gets the right matrix, neither crashes on a
    chunk the other has deleted, and no chunk, temporary file or warning is left behind."""
    ctx = multiprocessing.get_context("spawn")
    cache, barrier = tmp_path / "cache", ctx.Barrier(2)
    outs = [str(tmp_path / f"out{j}.npy") for j in range(2)]
    procs = [ctx.Process(target=_concurrent_run, args=(str(cache), out, barrier)) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=900)
    assert [p.exitcode for p in procs] == [0, 0]
    for out in outs:
        np.testing.assert_allclose(np.load(out), reference[:300], atol=1e-5)
        assert Path(out + ".warnings").read_text() == ""
    files = [p.name for p in cache.rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].startswith("full-"), files  # one checked matrix; chunks and temps gone
    assert load_array(next(cache.rglob("full-*.npy")), rows=300) is not None
