"""synth.core: the one text normaliser and content id, atomic writes, the cache directory, registries and
one-line validation errors."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

import numpy as np
import pytest

from synth.core.errors import UserError
from synth.core.files import atomic_dir, atomic_file, atomic_write_json, atomic_write_text, default_cache_dir
from synth.core.registry import build, config_union
from synth.core.strict import StrictModel
from synth.core.text import content_id, normal_text
from synth.core.yamlio import validate


def test_content_id_is_blake2b_of_the_text_and_of_joined_parts():
    assert content_id("a text") == hashlib.blake2b(b"a text").hexdigest()[:16]
    assert content_id("d1", "p1", 7) == hashlib.blake2b("d1\x1fp1\x1f7".encode()).hexdigest()[:16]
    assert content_id("x", n=8) == content_id("x")[:8]
    assert content_id("lone \udc80 surrogate")  # JSON may carry one; it is hashed, not refused


def test_normal_text_strict_and_loose():
    assert normal_text("  What\tIS  it? ") == "what is it?"
    assert normal_text("¿Qué es  la METFORMINA?!", loose=True) == "qué es la metformina"
    assert normal_text("ｆｕｌｌ width.", loose=True) == "full width"  # NFKC
    assert normal_text("ｆｕｌｌ") != "full"  # strict keeps what the user's data says


def test_atomic_writes_leave_no_temp_and_keep_the_old_file_on_error(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(path, {"n": np.int64(3), "x": np.float32(0.5), "v": np.arange(2)})
    assert json.loads(path.read_text()) == {"n": 3, "x": 0.5, "v": [0, 1]}
    with pytest.raises(RuntimeError):
        with atomic_file(path, text=True) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert json.loads(path.read_text())["n"] == 3
    atomic_write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.json"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "old.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "new.txt").write_text("2")
            raise RuntimeError("killed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "new.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp or set-aside folder left


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SYNTH_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "synth"


class _A(StrictModel):
    kind: Literal["a"] = "a"
    x: int = 1


class _B(StrictModel):
    kind: Literal["b"] = "b"


def test_registry_builds_the_union_and_the_implementation():
    registry = {"a": (_A, lambda cfg, k: ("A", cfg.x, k)), "b": (_B, "synth.core.text:content_id")}
    union = config_union(registry)
    cfg = validate(union, {"kind": "a", "x": 5}, "--thing")
    assert build(registry, cfg, k=2) == ("A", 5, 2)
    assert build(registry, validate(union, {"kind": "b"}, "w")) == content_id(_B())  # lazily imported by name
    with pytest.raises(TypeError, match="'b'.*_A"):
        config_union({"b": (_A, None)})


def test_validation_errors_are_one_line_naming_the_key():
    union = config_union({"a": (_A, None), "b": (_B, None)})
    with pytest.raises(UserError) as e:
        validate(union, {"kind": "a", "x": "many", "y": 1}, "r.yaml")
    assert (
        str(e.value) == "r.yaml: a.x: Input should be a valid integer, unable to parse string as an integer "
        "(got 'many') (and 1 more error)"
    )
    with pytest.raises(UserError, match=r"^r.yaml: a.y: unknown key$"):
        validate(union, {"kind": "a", "y": 1}, "r.yaml")
    with pytest.raises(UserError, match=r"^--llm: y: unknown key$"):  # a model class, not a union
        validate(_A, {"kind": "a", "y": 1}, "--llm")
