"""The chunked embedding cache: resume after a kill, stale chunks never reused, prompts keyed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from synth.embed import BUNDLED_MODEL, EmbedStats, Encoder, embed_texts

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
    proc.wait()
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
