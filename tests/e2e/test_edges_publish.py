"""What a run publishes (issue 14): ``report.json``, the card ``README.md`` and ``report.html`` name no
local folder (home, cache, checkout, the recipe's own folder), and a hostile recipe name or licence is
text everywhere: no raw tag, no injected front-matter key, the exact string back from the YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.e2e.test_edges_inputs import make_beir
from tests.support.edges import no_partials

NAME = "<script>alert(1)</script>\n---\nlicense: evil"
LICENSE = "<b>mine</b>\n---\nlicense: evil"
FRONT_KEYS = {
    "pretty_name",
    "license",
    "license_name",
    "license_details",
    "task_categories",
    "tags",
    "size_categories",
    "configs",
}


def test_published_files_have_no_local_path_and_escape_user_strings(synth_cli, cache_dir, tmp_path):
    project = tmp_path / "project"
    make_beir(project / "data")
    recipe = project / "recipe.yaml"
    recipe.write_text(
        f"name: {json.dumps(NAME)}\nseed: 0\n"
        f"source: {{kind: beir, path: data, split: train, license: {json.dumps(LICENSE)}}}\n"
        "mine: {n_negatives: 2, sampler: {kind: topk, range_min: 0, range_max: 10, pick: top}}\n"
    )
    out = tmp_path / "out"
    synth_cli("run", str(recipe), "--out", str(out), check=True)
    no_partials(tmp_path)

    files = {name: (out / name).read_text(encoding="utf-8") for name in ("report.json", "README.md", "report.html")}
    for name, text in files.items():
        for local in (str(Path.home()), str(cache_dir), str(REPO), str(tmp_path)):
            assert local not in text, f"{name} names the local folder {local}"

    report = json.loads(files["report.json"])
    assert report["recipe"]["name"] == NAME  # the report is data: the exact string
    assert report["recipe"]["source"]["path"] == "data"  # relative to the recipe's folder
    assert report["recipe"]["embed"]["cache_dir"] == "$SYNTH_CACHE_DIR"

    for name in ("README.md", "report.html"):
        assert "<script" not in files[name] and "<b>" not in files[name], name
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in files[name], name

    card = files["README.md"]
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("\n---\n", 1)[0][4:])
    assert set(front) <= FRONT_KEYS and {"pretty_name", "license"} <= set(front)
    assert front["pretty_name"] == NAME and front["license"] == "other"
    assert LICENSE in front["license_details"]
    # the resolved recipe in the card gives the exact strings back, so it runs again beside the original
    block = re.search(r"```yaml\n(.*?)\n```", card, re.S).group(1)
    shown = yaml.safe_load(block)
    assert shown["name"] == NAME and shown["source"]["license"] == LICENSE and shown["source"]["path"] == "data"
    # no heading, paragraph or table row was split by the line breaks of the name
    assert not any(line.startswith("license: evil") for line in card.splitlines())
