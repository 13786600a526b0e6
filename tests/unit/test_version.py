"""synth's version comes from ``pyproject.toml`` (the one place the number is written): from the source tree when
synth runs from it, else from the installed metadata, else ``"unknown"``; the report records the same value."""

from __future__ import annotations

import pytest

import synth
from synth.core.version import PYPROJECT, _source_tree_version, version
from synth.pipeline.report import environment

tomllib = pytest.importorskip("tomllib", reason="Python 3.10: the version comes from the installed metadata alone")


def test_the_version_is_pyprojects_and_the_report_records_it():
    written = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert version() == synth.__version__ == environment()["synth"] == written


def test_only_synths_own_pyproject_counts(tmp_path):
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "other"\nversion = "9.9"\n')
    assert _source_tree_version(other) is None
    other.write_text('[project]\nname = "synth"\nversion = "2.0"\n')
    assert _source_tree_version(other) == "2.0"
    assert _source_tree_version(tmp_path / "missing.toml") is None
    other.write_text("[project\n")  # not TOML: no version rather than an error
    assert _source_tree_version(other) is None
