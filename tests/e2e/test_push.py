"""`synth push` against a loopback Hub (tests/support/fake_hub.py): the real CLI in a subprocess, the real
datasets / huggingface_hub clients, real HTTP. Xet is switched off (HF_HUB_DISABLE_XET=1) so uploads take the
LFS path the fake Hub speaks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Dataset, DatasetDict

from synth.core.errors import UserError
from synth.publish.hub import RunContents, load_run, merged_card, push_run
from tests.conftest import REPO
from tests.support.fake_hub import FakeHub

TOKEN = "hf_test_token"
REPO_ID = "tester/synth-push"
CARD = """---
license: cc-by-4.0
pretty_name: synth push test
task_categories:
- sentence-similarity
---
# synth push test

Hard negatives mined by synth.
"""


@pytest.fixture()
def run_dir(tmp_path):
    triplets = Dataset.from_dict(
        {
            "anchor": ["what is a cell", "how do genes work", "why is the sky blue"],
            "positive": ["A cell is the unit of life.", "Genes encode proteins.", "Rayleigh scattering."],
            "negative": ["Cells phones are popular.", "Jeans are trousers.", "The sea is blue."],
            "query_id": ["q1", "q2", "q3"],
            "negative_ids": [["d7"], ["d8"], ["d9"]],
            "negative_scores": [[0.5], [0.25], [0.125]],
        }
    )
    verdicts = Dataset.from_dict(
        {
            "query_id": ["q1", "q2"],
            "doc_id": ["d7", "d8"],
            "verdict": ["negative", "positive"],
            "stage": ["pointwise", "listwise"],
        }
    )
    out = tmp_path / "run"
    DatasetDict({"triplets": triplets, "verdicts": verdicts}).save_to_disk(str(out / "dataset"))
    (out / "README.md").write_text(CARD)
    (out / "report.json").write_text(json.dumps({"seed": 0, "output": {"rows": 3}}))
    return out


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    with FakeHub(tokens=(TOKEN,)) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")  # the fake Hub speaks LFS, not Xet
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored token, no shared cache
        monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
        yield server


def push(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synth", "push", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=300,
        cwd=REPO,
    )


def front_matter(readme: bytes) -> dict:
    _, header, _ = readme.decode().split("---\n", 2)
    return yaml.safe_load(header)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def assert_no_token(proc: subprocess.CompletedProcess, *tokens: str) -> None:
    for token in tokens:
        assert token not in proc.stdout and token not in proc.stderr


def test_push_uploads_every_config_and_a_merged_card(hub, run_dir):
    started = time.perf_counter()
    proc = push(str(run_dir), "--repo", REPO_ID)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - started < 120
    assert_no_token(proc, TOKEN)

    files = hub.files(REPO_ID)
    parquet = {p: b for p, b in files.items() if p.endswith(".parquet")}
    assert sorted(parquet) == ["triplets/train-00000-of-00001.parquet", "verdicts/train-00000-of-00001.parquet"]
    # The parquet went through the LFS upload, not inline in a commit.
    assert sum(r.method == "PUT" and r.path.startswith("/__lfs/") for r in hub.requests) == 2
    local = DatasetDict.load_from_disk(str(run_dir / "dataset"))
    for path, content in parquet.items():
        name = path.split("/")[0]
        assert pq.read_table(io.BytesIO(content)).to_pylist() == local[name].to_list()

    meta = front_matter(files["README.md"])
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "synth push test"
    assert meta["task_categories"] == ["sentence-similarity"]
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"triplets", "verdicts"}
    assert configs["triplets"].get("default") is True
    assert configs["verdicts"]["data_files"] == [{"split": "train", "path": "verdicts/train-*"}]
    infos = {i["config_name"]: i for i in meta["dataset_info"]}
    assert infos["triplets"]["splits"][0]["num_examples"] == 3 and infos["verdicts"]["splits"][0]["num_examples"] == 2
    readme = files["README.md"].decode()
    assert readme.count("---\n") == 2 and readme.endswith("\n---\n" + CARD.split("---\n", 2)[2])

    record = json.loads((run_dir / "push.json").read_text())
    assert record["repo"] == REPO_ID
    assert [(c["name"], c["rows"]) for c in record["configs"]] == [("triplets", 3), ("verdicts", 2)]
    assert record["card"]["commit"] == hub.repos[("dataset", REPO_ID)].head
    assert TOKEN not in (run_dir / "push.json").read_text()
    assert "pushed triplets (3 rows)" in proc.stdout


def test_pushing_one_config_again_keeps_the_other_and_the_card(hub, run_dir):
    assert push(str(run_dir), "--repo", REPO_ID, "--private").returncode == 0
    triplets_before = hub.files(REPO_ID)["triplets/train-00000-of-00001.parquet"]
    proc = push(str(run_dir), "--repo", REPO_ID, "--config", "verdicts")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pushed verdicts (2 rows)" in proc.stdout and "triplets" not in proc.stdout.split("card:")[0]
    files = hub.files(REPO_ID)
    assert files["triplets/train-00000-of-00001.parquet"] == triplets_before
    meta = front_matter(files["README.md"])
    assert meta["license"] == "cc-by-4.0"
    assert [c["config_name"] for c in meta["configs"]] == ["triplets", "verdicts"]
    assert hub.repos[("dataset", REPO_ID)].private is True
    assert [c["name"] for c in json.loads((run_dir / "push.json").read_text())["configs"]] == ["verdicts"]


def test_missing_token_fails_before_any_request(hub, run_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    proc = push(str(run_dir), "--repo", REPO_ID)
    assert_one_line_error(proc, 2, "no Hugging Face token", "hf auth login", "HF_TOKEN")
    assert not [r for r in hub.requests if r.path != "/api/agent-harnesses"]
    assert not (run_dir / "push.json").exists()


def test_rejected_token_is_one_line_and_never_printed(hub, run_dir, monkeypatch):
    bad = "hf_not_a_valid_token_123"
    monkeypatch.setenv("HF_TOKEN", bad)
    proc = push(str(run_dir), "--repo", REPO_ID)
    assert_one_line_error(proc, 2, "HTTP 401", "no config reached the Hub")
    assert_no_token(proc, bad, TOKEN)
    assert not (run_dir / "push.json").exists() and not hub.files(REPO_ID)


def test_hub_failure_midway_names_what_reached_the_hub_and_keeps_push_json(hub, run_dir):
    previous = '{"repo": "tester/an-earlier-push"}'
    (run_dir / "push.json").write_text(previous)
    hub.fail_next(500, match=f"POST /api/datasets/{REPO_ID}/commit/", after=1)  # the second config's commit
    started = time.perf_counter()
    proc = push(str(run_dir), "--repo", REPO_ID)
    line = assert_one_line_error(proc, 3, "HTTP 500", "pushing config 'verdicts'", "already on the Hub: triplets")
    assert "push.json not written" in line
    assert time.perf_counter() - started < 60  # no retry backoff on the commit
    assert_no_token(proc, TOKEN)
    assert (run_dir / "push.json").read_text() == previous
    assert sorted(p for p in hub.files(REPO_ID) if p.endswith(".parquet")) == ["triplets/train-00000-of-00001.parquet"]


def test_unknown_config_lists_the_available_ones(hub, run_dir):
    proc = push(str(run_dir), "--repo", REPO_ID, "--config", "pairs")
    assert_one_line_error(proc, 2, "--config pairs", "available: triplets, verdicts")
    assert not hub.requests


# ---- in process: checks that run before any network ----------------------------------------------------------


@pytest.mark.parametrize("missing", ["dataset", "README.md", "report.json"])
def test_not_a_run_names_the_missing_file(run_dir, missing):
    target = run_dir / missing
    if target.is_dir():
        import shutil

        shutil.rmtree(target)
    else:
        target.unlink()
    with pytest.raises(UserError, match=f"not a synth run: {missing} is missing"):
        push_run(run_dir, REPO_ID, token=TOKEN)


@pytest.mark.parametrize("repo", ["no-namespace", "a/b/c", "bad name/x", "buckets/x", "x" * 120 + "/y"])
def test_bad_repo_id(run_dir, repo):
    with pytest.raises(UserError, match="--repo"):
        push_run(run_dir, repo, token=TOKEN)


def test_card_without_license_is_refused(run_dir):
    (run_dir / "README.md").write_text("---\npretty_name: x\n---\nbody\n")
    with pytest.raises(UserError, match="no `license`"):
        load_run(run_dir)


def test_plain_dataset_of_an_older_run_is_the_triplets_config(run_dir):
    import shutil

    shutil.rmtree(run_dir / "dataset")
    Dataset.from_dict({"anchor": ["a"], "positive": ["b"]}).save_to_disk(str(run_dir / "dataset"))
    assert list(load_run(run_dir).configs) == ["triplets"]


def test_merged_card_keeps_run_fields_and_takes_the_hubs_data_layout():
    contents = RunContents(
        configs={}, card_text="# body\n", card_metadata={"license": "mit", "configs": [{"config_name": "stale"}]}
    )
    hub_card = (
        "---\nconfigs:\n- config_name: triplets\n  data_files: triplets/train-*\nlicense: other\n"
        "tags:\n- added-on-the-hub\n---\nauto card\n"
    )
    meta = front_matter(merged_card(contents, hub_card).encode())
    assert meta["license"] == "mit"
    assert meta["configs"] == [{"config_name": "triplets", "data_files": "triplets/train-*"}]
    assert meta["tags"] == ["added-on-the-hub"]
    card = merged_card(contents, hub_card)
    assert card.startswith("---\n") and card.count("---\n") == 2 and card.endswith("\n---\n# body\n")
