"""Issue 14, numbers and YAML at the edges, through the real CLI: every float is finite, every integer is
bounded, limits that depend on the data are checked when it is loaded, a model folder is checked before
it is loaded, and every YAML read goes through one loader with limits. Each error is exit 2, one line
naming the key or file:line, no traceback; a failed ``run`` creates no ``--out`` and leaves no partial."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from tests.support.edges import assert_kept, no_partials, one_line_error, snapshot

GOOD = (REPO / "recipes" / "topk.yaml").read_text().replace("../examples/scifact-mini", str(EXAMPLE))

BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip([None, *"abcdefgh"], "abcdefghi")
)


def _recipe(tmp_path: Path, text: str = GOOD, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _validate_error(synth_cli, tmp_path: Path, *args: str, text: str = GOOD) -> str:
    path = _recipe(tmp_path, text)
    before = snapshot(tmp_path)
    line = one_line_error(synth_cli("validate", str(path), *args))
    assert_kept(before, tmp_path)
    return line


def _run_error(synth_cli, tmp_path: Path, recipe: Path, *args: str) -> str:
    out = tmp_path / "out"
    before = snapshot(tmp_path)
    line = one_line_error(synth_cli("run", str(recipe), "--out", str(out), *args))
    assert not out.exists()
    no_partials(tmp_path)
    assert_kept(before, tmp_path)
    return line


def _tiny_pairs(tmp_path: Path, n: int = 12) -> Path:
    """A JSONL pairs source whose corpus is its ``n`` positives: small enough to hit corpus limits."""
    path = tmp_path / "pairs.jsonl"
    topics = [
        "rain",
        "solar power",
        "bread",
        "chess",
        "volcanoes",
        "bees",
        "tides",
        "jazz",
        "glaciers",
        "owls",
        "comets",
        "coffee",
        "tennis",
        "ferns",
        "silk",
        "radar",
    ]
    path.write_text(
        "".join(
            json.dumps({"anchor": f"what about {t}?", "positive": f"A short passage on {t} and how {t} works."}) + "\n"
            for t in topics[:n]
        )
    )
    return path


def _tiny_recipe(tmp_path: Path, sampler: str, n_negatives: int = 3) -> Path:
    return _recipe(
        tmp_path,
        f"seed: 0\nsource: {{kind: jsonl, path: {_tiny_pairs(tmp_path)}}}\n"
        f"mine:\n  n_negatives: {n_negatives}\n  sampler: {sampler}\n",
        "tiny.yaml",
    )


# --- every float is finite, in every config class -------------------------------------------------------------


@pytest.mark.parametrize(
    "override,key",
    [
        ("mine.sampler={kind: resa2, kernel: .inf}", "mine.sampler.resa2.kernel"),
        ("mine.sampler={kind: simans, b: .nan}", "mine.sampler.simans.b"),
        ("mine.filters=[{kind: abs, tau: -.inf}]", "mine.filters.0.abs.tau"),
        ("mine.filters.0.p=.nan", "mine.filters.0.perc.p"),
        ("llm={kind: local, temperature: .nan}", "llm.local.temperature"),
        ("llm={kind: openai, model: m, timeout_s: .inf}", "llm.openai.timeout_s"),
        ("budget={usd: .inf}", "budget.usd"),
        ("index.memory_budget_gb=.inf", "index.memory_budget_gb"),
        ("personas={temperature: -.inf}", "personas.temperature"),
    ],
)
def test_non_finite_float_is_rejected(synth_cli, tmp_path, override, key):
    line = _validate_error(synth_cli, tmp_path, "--set", override)
    assert f"{key}: Input should be a finite number" in line, line
    assert "recipe.yaml" in line


def test_non_finite_threshold_in_a_judges_file(synth_cli, tmp_path):
    cascade = tmp_path / "judges.yaml"
    cascade.write_text("name: margin\nstages:\n  - kind: embedding_margin\n    negative_below: .nan\n")
    line = _validate_error(synth_cli, tmp_path, "--set", f"judge={{cascade: {cascade}}}")
    assert str(cascade) in line and "stages.0.embedding_margin.negative_below" in line and "finite" in line


def test_non_finite_llm_option(synth_cli, tmp_path):
    line = one_line_error(
        synth_cli(
            "relabel",
            "--input",
            str(tmp_path / "x.jsonl"),
            "--judges",
            str(REPO / "judges" / "fn_risk.yaml"),
            "--out",
            str(tmp_path / "out"),
            "--llm",
            "{kind: local, top_p: .nan}",
        )
    )
    assert "--llm" in line and "top_p" in line and "finite" in line
    assert not (tmp_path / "out").exists()


# --- every integer is bounded ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,key,bound",
    [
        ("mine.n_negatives=1000000000", "mine.n_negatives", "1000"),
        ("mine.sampler={kind: resa2, k1: 1000000000000}", "mine.sampler.resa2.k1", "2147483647"),
        (f"seed={10**30}", "seed", "4294967295"),
        ("seed=-1", "seed", "0"),
        ("embed.batch_size=99999999999", "embed.batch_size", "2147483647"),
    ],
)
def test_huge_integer_is_rejected(synth_cli, tmp_path, override, key, bound):
    line = _validate_error(synth_cli, tmp_path, "--set", override)
    assert f": {key}: Input should be" in line and bound in line, line


def test_largest_seed_is_accepted(synth_cli, tmp_path):
    proc = synth_cli("validate", str(_recipe(tmp_path)), "--set", f"seed={2**32 - 1}", check=True)
    assert f"seed: {2**32 - 1}" in proc.stdout


def test_max_seq_length_above_the_model_limit(synth_cli, tmp_path):
    line = _validate_error(synth_cli, tmp_path, "--set", "embed.max_seq_length=4096")
    assert "embed.max_seq_length: 4096 is above the model's limit of 512 tokens" in line, line
    cascade = REPO / "judges" / "fn_risk.yaml"
    line = _validate_error(
        synth_cli, tmp_path, "--set", f"judge={{cascade: {cascade}, train_cross_encoder: {{max_length: 513}}}}"
    )
    assert "judge.train_cross_encoder.max_length: 513 is above the model's limit of 512 tokens" in line, line
    synth_cli("validate", str(_recipe(tmp_path)), "--set", "embed.max_seq_length=512", check=True)


# --- limits that depend on the data ----------------------------------------------------------------------------


def test_n_negatives_against_the_corpus(synth_cli, tmp_path):
    recipe = _tiny_recipe(tmp_path, "{kind: topk}", n_negatives=12)
    line = _run_error(synth_cli, tmp_path, recipe)
    assert "mine.n_negatives: 12" in line and "the corpus has 12" in line, line


def test_window_past_the_corpus_is_an_error_or_a_reported_clamp(synth_cli, tmp_path):
    skip_all = _tiny_recipe(tmp_path, "{kind: topk, range_min: 50, range_max: 60}")
    assert "mine.sampler.range_min: 50" in _run_error(synth_cli, tmp_path, skip_all)
    recipe = _tiny_recipe(tmp_path, "{kind: resa2, k1: 5000, k1_prime: 4000, k2: 10}")
    out = tmp_path / "clamped"
    synth_cli("run", str(recipe), "--out", str(out), check=True)
    report = json.loads((out / "report.json").read_text())
    assert report["clamps"] == {
        "mine.sampler.k1": {"set": 5000, "used": 12},
        "mine.sampler.k1_prime": {"set": 4000, "used": 12},
    }
    assert report["output"]["rows"] == 12


def test_ivf_factory_needs_more_vectors_than_the_corpus_has(synth_cli, tmp_path):
    line = _run_error(synth_cli, tmp_path, _recipe(tmp_path), "--set", "index.factory=IVF4096,Flat")
    assert line == (
        "error: index.factory: IVF4096,Flat needs at least 4096 (faiss warns below 39x4096) training "
        "vectors; the corpus has 1200: use IVF16,Flat or Flat"
    ), line


def test_unparsable_factory(synth_cli, tmp_path):
    line = _run_error(synth_cli, tmp_path, _recipe(tmp_path), "--set", "index.factory=Garbage42,Flat")
    assert "index.factory: faiss cannot build 'Garbage42,Flat'" in line and "could not parse" in line, line


@pytest.mark.parametrize("factory", ["HNSW0", "IVF16_HNSW1,Flat"])
def test_hnsw_with_fewer_than_two_neighbours(synth_cli, tmp_path, factory):
    """faiss parses these, then aborts the process (SIGABRT) or hangs when vectors are added."""
    line = _run_error(synth_cli, tmp_path, _recipe(tmp_path), "--set", f"index.factory={factory}")
    assert f"index.factory: {factory}: HNSW" in line and "needs M >= 2" in line, line


@pytest.mark.parametrize(
    "factory,train_size,expected",
    [
        ("IVF16,PQ7", 262_144, "index.factory: faiss cannot build 'IVF16,PQ7' for 64-dim vectors: The dimension"),
        ("IVF8,PQ8", 262_144, "index.factory: IVF8,PQ8 cannot be trained on 200 vectors: Number of training points"),
        ("IVF64,Flat", 32, "index.train_size: 32 training vectors are fewer than the 64 lists of IVF64,Flat"),
        ("IVF0,Flat", 262_144, "index.factory: IVF0,Flat has no inverted lists"),
    ],
)
def test_index_build_checks_what_depends_on_the_vectors(factory, train_size, expected):
    """What the load-time check cannot know (the dimension, PQ's 256 centroids, train_size) is checked when
    the index is built, by the real faiss, on real vectors: one line, never a faiss assertion."""
    import numpy as np

    from synth.core.errors import UserError
    from synth.index import Searcher

    vectors = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    with pytest.raises(UserError) as e:
        Searcher(vectors, factory, "ip", "cpu", 8, 64, train_size, 0, 2**30)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value), e.value
    fine = Searcher(vectors, "IVF8,Flat", "ip", "cpu", 8, 64, train_size, 0, 2**30)  # faiss only warns: a note
    assert fine.info.notes == [
        f"IVF8,Flat: {min(200, train_size)} training vectors for 8 lists (faiss advises at least 312)"
    ]


# --- a model folder is checked before it is loaded ---------------------------------------------------------------


def test_embed_model_that_is_not_a_model(synth_cli, tmp_path):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    text_file = tmp_path / "model.txt"
    text_file.write_text("not a model\n")
    cases = {
        str(empty): "neither modules.json",
        str(text_file): "is a file",
        "no-such-model-xyz": "synth never downloads",
        "owner/no-such-model-xyz": "synth never downloads",
        str(tmp_path / "missing"): "no such model folder",
    }
    for model, expected in cases.items():
        line = _validate_error(synth_cli, tmp_path, "--set", f"embed.model={model}")
        assert "recipe.yaml: embed.model:" in line and expected in line, line


# --- one YAML loader -------------------------------------------------------------------------------------------


def test_alias_bomb_fails_fast(synth_cli, tmp_path):
    from synth.core.errors import UserError
    from synth.core.yamlio import load_text

    t0 = time.perf_counter()
    with pytest.raises(UserError, match="alias bomb"):
        load_text(BOMB, "bomb.yaml")
    assert time.perf_counter() - t0 < 2.0
    t0 = time.perf_counter()
    line = _validate_error(synth_cli, tmp_path, text=GOOD + BOMB)
    assert time.perf_counter() - t0 < 10.0  # a subprocess: interpreter start-up included; the bomb took ~75 s
    assert "recipe.yaml:" in line and "alias bomb" in line, line
    line = _validate_error(synth_cli, tmp_path, "--set", "name=" + BOMB.replace("\n", ", ").join("{}"))
    assert line.startswith("error: --set name: invalid YAML value") and "alias bomb" in line, line


def test_duplicate_key_names_its_line(synth_cli, tmp_path):
    text = GOOD.replace("  n_negatives: 5\n", "  n_negatives: 5\n  n_negatives: 7\n")
    lines = text.splitlines()
    first = lines.index("  n_negatives: 5") + 1
    line = _validate_error(synth_cli, tmp_path, text=text)
    assert f"recipe.yaml:{first + 1}: invalid YAML: duplicate key 'n_negatives' (first at line {first})" in line


def test_duplicate_key_in_a_judges_file(synth_cli, tmp_path):
    cascade = tmp_path / "judges.yaml"
    cascade.write_text("name: a\nname: b\nstages:\n  - kind: embedding_margin\n")
    line = _validate_error(synth_cli, tmp_path, "--set", f"judge={{cascade: {cascade}}}")
    assert f"{cascade}:2: invalid YAML: duplicate key 'name'" in line, line


@pytest.mark.parametrize(
    "override,expected",
    [
        ("mine.n_negatives=[1", "error: --set mine.n_negatives: invalid YAML value '[1': expected ','"),
        (
            "seed=!!python/object:os.system ls",
            "error: --set seed: invalid YAML value '!!python/object:os.system ls': "
            "could not determine a constructor for the tag",
        ),
        ("mine.filters.7.p=0.5", "error: --set mine.filters.7.p: 'mine.filters' is a list of 1"),
    ],
)
def test_bad_set_value(synth_cli, tmp_path, override, expected):
    assert _validate_error(synth_cli, tmp_path, "--set", override).startswith(expected)


def test_deep_nesting_and_oversize_file(synth_cli, tmp_path):
    deep = GOOD + "extra: " + "[" * 500 + "]" * 500 + "\n"
    line = _validate_error(synth_cli, tmp_path, text=deep)
    assert f"recipe.yaml:{len(GOOD.splitlines()) + 1}: invalid YAML: nested deeper than 64 levels" in line, line
    big = GOOD + ("# padding\n" * 120_000)
    line = _validate_error(synth_cli, tmp_path, text=big)
    assert "recipe.yaml: invalid YAML:" in line and "over the 1048576 byte limit" in line, line


def test_binary_recipe_and_control_characters(synth_cli, tmp_path):
    """A binary file passed as a recipe (NUL bytes) and a control character in a value or a ``--set``:
    PyYAML's reader raises before parsing starts; still one line naming the line."""
    line = _validate_error(synth_cli, tmp_path, text="seed: 0\n\x00\x01\x02garbage\n")
    assert "recipe.yaml:2: invalid YAML: control character #x0000" in line, line
    line = _validate_error(synth_cli, tmp_path, "--set", "name=a\x07b")
    assert line.startswith("error: --set name: invalid YAML value") and "control character #x0007" in line, line
