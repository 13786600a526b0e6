"""synth installed from its wheel, outside the checkout: ``synth init DIR``, then the example recipes run.

The wheel is built from a clean copy of the sources (``pip wheel --no-deps``: no stale ``build/``), installed
with ``pip install --no-deps --target T`` (torch and the rest come from the test environment, nothing is
downloaded) and run as ``python -S -m synth`` with ``PYTHONPATH=T:<site-packages>`` from a folder outside
the checkout. Why ``-S``: the test environment has synth installed in editable mode, and the ``.pth`` file
of an editable install puts a meta-path finder in place that serves any ``synth.*`` module missing from T
straight from the checkout, which would hide a file the wheel forgot. ``-S`` skips ``.pth`` files, so the
checkout is not reachable at all; site-packages is put on the path by hand for the dependencies.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.support.digests import check

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "synth" / "assets"

pytestmark = pytest.mark.slow


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    shutil.copytree(REPO / "synth", dest / "synth", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):  # README.md: the project's long description
        shutil.copy2(REPO / name, dest / name)
    return dest


def _build_wheel(src: Path, out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-w", str(out), "-q"]
    if importlib.util.find_spec("setuptools") is not None:
        cmd.append("--no-build-isolation")  # offline: the environment's setuptools builds it
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("synth-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory, cache_dir):
    """(wheel, run): ``run(*args)`` is ``python -S -m synth ARGS`` on the installed wheel, in a folder
    outside the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(_copy_sources(root / "src"), root / "dist")
    target = root / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--target",
            str(target),
            str(wheel),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), *site]),
        "SYNTH_CACHE_DIR": str(cache_dir),
        "SYNTH_PROGRESS": "0",
        "HF_HUB_OFFLINE": "1",
    }
    work = root / "work"
    work.mkdir()

    def run(*args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-S", *args], capture_output=True, text=True, env=env, cwd=work, timeout=timeout
        )

    return wheel, target, work, run


def test_the_wheel_holds_every_asset(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        str(p.relative_to(REPO))
        for p in ASSETS.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert shipped - names == set()
    # what the pipeline reads at run time, by kind
    for pattern in (
        "prompts/*.j2",
        "prompts/*.schema.json",
        "judges/*.yaml",
        "recipes/*.yaml",
        "personas/*.jsonl",
        "examples/scifact-mini/qrels/train.tsv",
    ):
        assert [p for p in ASSETS.glob(pattern)], pattern
        assert all(str(p.relative_to(REPO)) in names for p in ASSETS.glob(pattern)), pattern


def test_the_installed_synth_is_the_wheel_not_the_checkout(installed):
    _, target, work, run = installed
    proc = run(
        "-c",
        "import json, sys, synth, synth.assets, synth.cli; "
        "print(json.dumps([synth.__file__, str(synth.assets.ASSETS), sys.path]))",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    module, assets, path = json.loads(proc.stdout)
    assert Path(module).is_relative_to(target) and Path(assets).is_relative_to(target)
    assert not any((work / p).resolve().is_relative_to(REPO) for p in path)  # "" is the child's cwd


def test_init_then_the_example_recipes_run_from_the_wheel(installed, tmp_path):
    _, target, work, run = installed
    proc = run("-m", "synth", "init", "proj")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "next: synth run proj/recipes/resa2.yaml" in proc.stdout
    for rel in (
        "recipes/resa2.yaml",
        "judges/fn_risk.yaml",
        "prompts/synthetic_query.j2",
        "examples/scifact-mini/corpus.jsonl",
        "examples/scifact-mini/qrels/train.tsv",
    ):
        assert (work / "proj" / rel).read_bytes() == (ASSETS / rel).read_bytes(), rel

    again = run("-m", "synth", "init", "proj")  # never overwrites without --force: one line, exit 2
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr

    out = tmp_path / "resa2"
    proc = run("-m", "synth", "run", "proj/recipes/resa2.yaml", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["output"]["rows"] > 0 and report["output"]["configs"]["triplets"] == report["output"]["rows"]
    # the same bytes as the checkout's run of recipes/resa2.yaml: dataset and card
    check("resa2", out, card=True)

    plan = run("-m", "synth", "run", "proj/recipes/synthetic_queries.yaml", "--dry-run")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "planned LLM requests" in plan.stdout
    rows = {
        cells[0]: cells
        for cells in ([c.strip() for c in re.split(r"[│|]", line) if c.strip()] for line in plan.stdout.splitlines())
        if cells
    }
    for stage in ("synthetic_queries", "synthetic_negatives"):  # requests planned from the rendered prompts
        requests, tokens_in_estimate = int(rows[stage][2]), int(rows[stage][7])
        assert requests > 0 and tokens_in_estimate > 0, plan.stdout

    proc = run("-m", "synth", "validate", "proj/recipes/resa2_plus_synthetic.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(work / "proj" / "judges" / "fn_risk.yaml") in proc.stdout  # resolved beside the recipe
