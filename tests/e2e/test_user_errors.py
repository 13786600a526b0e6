"""User errors exit 2 with exactly one line on stderr naming the file and the key or line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from tests.support.edges import no_partials
from tests.support.edges import one_line_error as _one_line_error

GOOD = (REPO / "recipes" / "topk.yaml").read_text()


def _recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace("../examples/scifact-mini", str(EXAMPLE)))
    return path


@pytest.mark.parametrize(
    "edit,expected",
    [
        (
            lambda t: t.replace("  range_max: 100", "  range_max: 100\n    range_maxx: 3"),
            "mine.sampler.topk.range_maxx: unknown key",
        ),
        (lambda t: t.replace("n_negatives: 5", "n_negatives: five"), "mine.n_negatives"),
        (lambda t: t.replace("kind: topk", "kind: nosuch"), "mine.sampler"),
        (lambda t: t + "\nbogus_top_level: 1\n", "bogus_top_level: unknown key"),
        (lambda t: t.replace("p: 0.95", "p: 1.5"), "mine.filters.0.perc.p"),
        (lambda t: t.replace("p: 0.95", "p: .nan"), "mine.filters.0.perc.p: Input should be a finite number"),
        (lambda t: t.replace("seed: 0", "seed: 0\nseed: 1"), "recipe.yaml:4: invalid YAML: duplicate key 'seed'"),
    ],
)
def test_validate_rejects_bad_recipe(synth_cli, tmp_path, edit, expected):
    path = _recipe(tmp_path, edit(GOOD))
    line = _one_line_error(synth_cli("validate", str(path)))
    assert str(path) in line and expected in line


def test_validate_names_missing_file(synth_cli, tmp_path):
    path = _recipe(tmp_path, GOOD.replace("../examples/scifact-mini", "no/such/folder"))
    path.write_text(GOOD.replace("../examples/scifact-mini", "no/such/folder"))
    line = _one_line_error(synth_cli("validate", str(path)))
    assert "source.path" in line and "no/such/folder" in line


def test_validate_prints_resolved_recipe(synth_cli, tmp_path):
    proc = synth_cli("validate", str(_recipe(tmp_path, GOOD)), check=True)
    for key in ("seed: 0", "query_block:", "nprobe:", "positive_anchor:", "range_min: 0", "format: n-tuple"):
        assert key in proc.stdout


def test_missing_recipe_and_bad_yaml(synth_cli, tmp_path):
    assert "no such recipe" in _one_line_error(synth_cli("validate", str(tmp_path / "nope.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nsource: [unclosed\n")
    assert f"{bad}:" in _one_line_error(synth_cli("validate", str(bad)))


def test_bad_set_override(synth_cli, tmp_path):
    path = _recipe(tmp_path, GOOD)
    assert "mine.n_negatives" in _one_line_error(synth_cli("validate", str(path), "--set", "mine.n_negatives=-1"))
    assert "--set" in _one_line_error(synth_cli("validate", str(path), "--set", "novalue"))


def test_run_on_malformed_corpus_names_file_and_line(synth_cli, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(EXAMPLE, data)
    lines = (data / "corpus.jsonl").read_text().splitlines()
    lines[6] = '{"_id": "broken", "text": '
    (data / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(GOOD.replace("../examples/scifact-mini", str(data)))
    out = tmp_path / "out"
    line = _one_line_error(synth_cli("run", str(path), "--out", str(out)))
    assert "corpus.jsonl:7" in line
    assert not out.exists()
    no_partials(tmp_path)
