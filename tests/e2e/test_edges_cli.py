"""The CLI at the edges (issue 14): usage errors, Ctrl-C and SIGTERM, output-folder safety, file-system
errors and a run that writes no row. Each case calls the real ``synth`` in a subprocess and checks the exit
code, one line on stderr, no traceback, nothing half-written and no foreign file deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, REPO
from tests.support.edges import assert_kept, no_partials, one_line_error, snapshot

TOPK = str(REPO / "recipes" / "topk.yaml")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "recipes/resa2.yaml", "--bogus"], "run: no such option: --bogus"),
        (["run"], "run: missing argument"),
        (["nosuch"], "no such command 'nosuch'"),
        (["eval", "x", "--beir", "y", "--epochs", "abc"], "eval: invalid value for '--epochs'"),
        (
            ["compare", "base", "--beir", "y", "--out", "o", "--max-steps", "0"],
            "compare: invalid value for '--max-steps'",
        ),
        (["relabel", "--out", "o", "--cap", "x"], "relabel: invalid value for '--cap'"),
        (["fn-probe", "recipes/topk.yaml"], "fn-probe: missing option '--out'"),
        (["train-judge", "--out", "o"], "train-judge: missing option '--source'"),
        (["push", "dir"], "push: missing option '--repo'"),
        (["validate"], "validate: missing argument"),
        (["schema", "extra"], "schema: got unexpected extra argument"),
        (["relabel", "--out", "o", "--seed", str(10**30)], "relabel: invalid value for '--seed'"),
        (["eval", "x", "--beir", "y", "--seed", "-1"], "eval: invalid value for '--seed'"),
    ],
)
def test_usage_error_is_one_line(synth_cli, args, fragment):
    line = one_line_error(synth_cli(*args), 2)
    assert line.startswith("error: ") and fragment in line.lower() and "--help)" in line, line


def test_compare_seed_out_of_range_is_one_line(synth_cli, tmp_path):
    out = tmp_path / "o"
    line = one_line_error(synth_cli("compare", "base", "--beir", "y", "--out", str(out), "--seeds", "0,99999999999"), 2)
    assert "--seeds: each seed must be in 0..4294967295" in line, line
    assert not out.exists()


def test_bare_synth_prints_help_and_help_exits_zero(synth_cli):
    bare = synth_cli()
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "Usage" in bare.stdout + bare.stderr and "run" in bare.stdout + bare.stderr
    helped = synth_cli("--help")
    assert helped.returncode == 0 and "Usage" in helped.stdout
    assert synth_cli("run", "--help").returncode == 0


def _env(cache_dir: Path, **extra: str) -> dict:
    return {**os.environ, "SYNTH_CACHE_DIR": str(cache_dir), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1", **extra}


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_signal_mid_run_exits_with_one_line_and_no_partial(cache_dir, tmp_path, signum, code):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synth", "run", TOPK, "--out", str(out)],
        cwd=REPO,
        env=_env(cache_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not list(tmp_path.glob(".out.partial-*")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal"
    time.sleep(1.0)  # inside the stages, not at the folder's creation
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    assert one_line_error(done, code) == "interrupted: rerun the same command to resume"
    assert not out.exists()
    no_partials(tmp_path)


def _user_folder(path: Path, with_report: bool) -> Path:
    (path / "notes").mkdir(parents=True)
    (path / "notes" / "thesis.txt").write_text("months of work\n")
    if with_report:
        (path / "report.json").write_text('{"mine": true}\n')
    return path


@pytest.mark.parametrize("with_report", [True, False], ids=["with-report-json", "foreign"])
def test_out_folder_not_written_by_synth_is_refused_and_untouched(synth_cli, tmp_path, with_report):
    out = _user_folder(tmp_path / "out", with_report)
    before = snapshot(tmp_path)
    line = one_line_error(synth_cli("run", TOPK, "--out", str(out)), 2)
    assert str(out) in line and "not a synth output" in line, line
    assert_kept(before, tmp_path)
    no_partials(tmp_path)


def test_own_folder_is_replaced_and_dead_leftovers_removed(synth_cli, tmp_path):
    out = tmp_path / "out"
    synth_cli("run", TOPK, "--out", str(out), check=True)
    first = json.loads((out / ".synth-run").read_text())["run_id"]
    (out / "stale.txt").write_text("from the first run\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    stale = tmp_path / f".out.partial-{dead.pid}"
    (stale / "dataset").mkdir(parents=True)
    live = tmp_path / f".out.partial-{os.getpid()}"  # this test's own process: alive, must be kept
    live.mkdir()
    (live / "x").write_text("in use\n")
    synth_cli("run", TOPK, "--out", str(out), check=True)
    assert json.loads((out / ".synth-run").read_text())["run_id"] != first
    assert not (out / "stale.txt").exists() and (out / "report.json").exists()
    assert not stale.exists() and (live / "x").read_text() == "in use\n"
    live.joinpath("x").unlink()
    live.rmdir()
    no_partials(tmp_path)


def test_out_name_near_the_limit(synth_cli, tmp_path):
    out = tmp_path / ("n" * 250)
    synth_cli("run", TOPK, "--out", str(out), check=True)
    assert (out / "report.json").exists()
    no_partials(tmp_path)


def test_empty_folder_is_used(synth_cli, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    synth_cli("run", TOPK, "--out", str(out), check=True)
    assert (out / "report.json").exists() and (out / ".synth-run").exists()
    no_partials(tmp_path)


def test_recipe_is_a_folder(synth_cli, tmp_path):
    line = one_line_error(synth_cli("run", str(REPO / "recipes"), "--out", str(tmp_path / "o")), 2)
    assert "recipes" in line and "folder" in line, line
    assert not (tmp_path / "o").exists()


def test_out_parent_is_a_file(synth_cli, tmp_path):
    (tmp_path / "afile").write_text("keep\n")
    before = snapshot(tmp_path)
    line = one_line_error(synth_cli("run", TOPK, "--out", str(tmp_path / "afile" / "out")), 2)
    assert str(tmp_path / "afile") in line, line
    line = one_line_error(synth_cli("run", TOPK, "--out", str(tmp_path / "afile" / "a" / "b")), 2)
    assert str(tmp_path / "afile") in line, line
    assert_kept(before, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_out_parent_not_writable(synth_cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = one_line_error(synth_cli("run", TOPK, "--out", str(locked / "out")), 2)
        assert str(locked) in line and "not writable" in line, line
    finally:
        locked.chmod(0o755)


def test_cache_dir_is_a_file(tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder\n")
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", TOPK, "--out", str(tmp_path / "o")],
        cwd=REPO,
        env=_env(cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    line = one_line_error(proc, 2)
    assert str(cache) in line, line
    assert cache.read_text() == "not a folder\n" and not (tmp_path / "o").exists()
    no_partials(tmp_path)


def test_zero_rows_is_an_error_that_keeps_the_report(synth_cli, tmp_path):
    out = tmp_path / "out"
    proc = synth_cli("run", TOPK, "--out", str(out), "--set", "mine.filters.0.p=0.01", "--set", "mine.backfill_depth=0")
    line = one_line_error(proc, 2)
    assert "0 training rows" in line and "dropped short of 5 negatives" in line, line
    assert str(out / "report.json") in line
    assert json.loads((out / "report.json").read_text())["output"]["rows"] == 0
    no_partials(tmp_path)


def test_eval_and_compare_refuse_user_files(synth_cli, tmp_path):
    result = tmp_path / "result.json"
    result.write_text('{"my": "notes"}\n')
    folder = _user_folder(tmp_path / "cmp", with_report=True)
    before = snapshot(tmp_path)
    line = one_line_error(synth_cli("eval", str(tmp_path), "--beir", str(EXAMPLE), "--out", str(result)), 2)
    assert str(result) in line and "not a synth result" in line, line
    line = one_line_error(
        synth_cli("compare", "base", "--beir", str(EXAMPLE), "--split", "train", "--out", str(folder)), 2
    )
    assert str(folder) in line and "not a synth output" in line, line
    assert_kept(before, tmp_path)
