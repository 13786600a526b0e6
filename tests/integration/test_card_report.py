"""The dataset card (README.md) and the HTML report, written from a real run's report and dataset.

One real `synth run recipes/resa2.yaml` feeds every test; the judging / mix / licences / LLM sections a
judged, synthetic run would add are grafted onto its report with figures derived from its own counts, and
the result is parsed as the writer's readers parse it (``RunReport``): a graft the model refuses fails here.
"""

from __future__ import annotations

from xml.etree import ElementTree
import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from datasets import Dataset, DatasetDict, load_from_disk

from synth.formats.st import with_provenance
from synth.report.run import RunReport
from synth.publish import card as cards
from synth.publish import report as pages
from synth.publish.card import combine_licenses
from tests.support.reports import USAGE
from tests.support.runs import copy_run

REPO = Path(__file__).resolve().parents[2]
FAKE_KEY = "sk-test-" + "Zq8" * 12  # shaped like an OpenAI key
FAKE_ENV = "SYNTH_CARD_TEST_API_KEY"
PROMPT_SHA = "3f" * 32


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, session_resa2_run) -> tuple[Path, dict, object]:
    # A copy of the session's resa2 run: a test below writes its card into the run folder.
    out = copy_run(session_resa2_run, tmp_path_factory.mktemp("card") / "run")
    report = json.loads((out / "report.json").read_text())
    dataset = load_from_disk(str(out / "dataset"))
    triplets = with_provenance(dataset, "triplets")  # the training rows with their provenance columns
    return out, report, triplets


def write_card(out_dir: Path, report: dict, configs: dict[str, int]) -> Path:
    return cards.write_card(out_dir, RunReport.model_validate(report), configs)


def write_report_html(out_dir: Path, report: dict, triplets=None) -> Path:
    return pages.write_report_html(out_dir, RunReport.model_validate(report), triplets)


def stage(name: str, kind: str, candidates: int, negative: int, fn: int, uncertain: int, **more) -> dict:
    return {
        "stage": name,
        "kind": kind,
        "fingerprint": name[:2],
        "candidates": candidates,
        "reused": more.get("reused", 0),
        "judged": candidates - more.get("reused", 0),
        "negative": negative,
        "false_negative": fn,
        "uncertain": uncertain,
        "failed": more.get("failed", 0),
        "seconds": more.get("seconds", 0.01),
    }


def extended(report: dict) -> dict:
    """The real report plus the sections a judged run with LLM stages writes, sized from its own counts."""
    r = copy.deepcopy(report)
    candidates = int(r["output"]["negatives"])
    margin_neg = candidates // 2
    ce_neg, ce_fn = (candidates - margin_neg) // 2, 7
    llm_in = candidates - margin_neg - ce_neg - ce_fn
    llm_fn, llm_unc = 3, 2
    r["judging"] = {
        "cascade": {
            "path": "ce_then_llm",
            "name": "ce_then_llm",
            "resolved": {
                "stages": [
                    {"kind": "embedding_margin", "name": "margin"},
                    {"kind": "cross_encoder", "name": "ce", "model": "/cache/judge/ce-0123456789"},
                    {
                        "kind": "llm_listwise",
                        "name": "llm",
                        "prompt": "judge_listwise",
                        "llm": {"kind": "openai", "model": "judge-model-x", "api_key_env": FAKE_ENV},
                    },
                ]
            },
        },
        "candidates": {"mined": candidates, "synthetic": 0, "unique": candidates},
        "final": {
            "negative": margin_neg + ce_neg + llm_in - llm_fn - llm_unc,
            "false_negative": ce_fn + llm_fn,
            "uncertain": llm_unc,
        },
        "stages": [
            stage("margin", "embedding_margin", candidates, margin_neg, 0, candidates - margin_neg),
            stage("ce", "cross_encoder", candidates - margin_neg, ce_neg, ce_fn, llm_in, seconds=2.5),
            stage("llm", "llm_listwise", llm_in, llm_in - llm_fn - llm_unc, llm_fn, llm_unc, reused=10, failed=1),
        ],
        "store": "$SYNTH_CACHE_DIR/verdicts/x.sqlite",
        "policy": {"policy": "drop_false_negatives", "cap": None, "negatives_removed": ce_fn + llm_fn},
        "cross_encoder": None,
    }
    r["licenses"] = {
        "corpus": "cc-by-4.0",
        "personas": "CC BY-NC-SA 4.0",
        "llm": "apache-2.0",
        "embedder": "Apache-2.0",
    }
    r["synthetic_queries"] = {
        "generation": {"requests": 32, "answered": 32, "failed": 0, "failures": {}, "docs": 16, "personas": 0},
        "quality_judge": {
            "model": "gpt-x@2024",
            "prompt": "synthetic_query",
            "prompt_sha256": PROMPT_SHA,
            "requests": 32,
            "verdicts": {"keep": 30, "drop": 2, "failed": 0},
        },
        "candidates": 32,
        "kept": 30,
        "dropped": {"quality_judge": 2},
    }
    r["synthetic_queries"]["generation"]["by_type"] = {"question": 32}

    def usage(sent: int, hits: int, tokens_in: int, tokens_out: int, cost: float | None) -> dict:
        counts = {"requests_sent": sent, "cache_hits": hits, "tokens_in": tokens_in, "tokens_out": tokens_out}
        return {**USAGE, **counts, "cost_usd": cost}

    r["llm"]["stages"] = {
        "synthetic_queries": {
            **usage(32, 0, 9000, 1500, 0.0021),
            "models": {"gpt-x@2024": usage(32, 0, 9000, 1500, 0.0021)},
        },
        "judge": {**usage(40, 10, 30000, 800, None), "models": {"judge-model-x": usage(40, 10, 30000, 800, None)}},
    }
    # A careless recipe: the key itself pasted next to its variable name, and inside a URL.
    r["recipe"]["llm"] = {
        "kind": "openai",
        "model": "gpt-x",
        "api_key_env": FAKE_ENV,
        "api_key": FAKE_KEY,
        "base_url": f"https://user:{FAKE_KEY}@llm.internal/v1",
        "max_tokens": 256,
    }
    r["notices"] = [f"debug: Authorization: Bearer {FAKE_KEY}"]
    return r


def front_matter(text: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", text, re.DOTALL)
    assert m, "card has no YAML front matter"
    return yaml.safe_load(m.group(1))


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def plots(html_text: str) -> list[ElementTree.Element]:
    """The page's inline SVG plots, parsed: each must be well-formed markup on its own."""
    found = re.findall(r'<figure class="plot">(<svg .*?</svg>)</figure>', html_text, re.DOTALL)
    return [ElementTree.fromstring(markup) for markup in found]


def test_combine_licenses():
    assert combine_licenses({"corpus": "Apache-2.0", "llm": "apache-2.0", "embedder": "Apache 2.0"}) == (
        "apache-2.0",
        None,
    )
    lic, details = combine_licenses({"corpus": "cc-by-4.0", "personas": "CC BY-NC-SA 4.0"})
    assert lic == "other" and details == "corpus: cc-by-4.0; personas: cc-by-nc-sa-4.0"
    assert combine_licenses({}) == ("unknown", None)
    # Free text never counts as agreeing with an id, even when it is the only part.
    assert combine_licenses({"corpus": "research use only"})[0] == "other"


def test_card_single_license(real_run, tmp_path):
    out, report, triplets = real_run
    r = copy.deepcopy(report)
    r["licenses"] = {"corpus": "apache-2.0", "embedder": "Apache-2.0"}
    text = write_card(tmp_path, r, {"triplets": len(triplets)}).read_text()
    fm = front_matter(text)
    assert fm["license"] == "apache-2.0" and "license_name" not in fm
    assert fm["task_categories"] == ["sentence-similarity"]
    assert {"synth", "hard-negatives"} <= set(fm["tags"]) and fm["size_categories"] == ["n<1K"]
    assert fm["pretty_name"] == report["recipe"]["name"]
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temp file left behind


def test_card_contents(real_run, tmp_path):
    out, report, triplets = real_run
    r = extended(report)
    configs = {"triplets": len(triplets), "verdicts": r["judging"]["final"]["negative"] + 12}
    text = write_card(tmp_path, r, configs).read_text()
    fm = front_matter(text)
    assert fm["license"] == "other" and fm["license_name"]
    for part in ("corpus: cc-by-4.0", "personas: cc-by-nc-sa-4.0", "llm: apache-2.0", "embedder: apache-2.0"):
        assert part in fm["license_details"] and part in text
    assert f"Seed: **{report['seed']}**" in text
    recipe_block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL).group(1)
    shown = yaml.safe_load(recipe_block)
    assert shown["mine"] == report["recipe"]["mine"] and shown["source"] == report["recipe"]["source"]
    for model in (report["recipe"]["embed"]["model"], "gpt-x@2024", "judge-model-x", "/cache/judge/ce-0123456789"):
        assert model in text
    assert PROMPT_SHA in text and "judge_listwise" in text
    assert f"| triplets | {len(triplets)} |" in text
    assert "| llm | llm_listwise |" in text  # the per-stage verdict table
    neg = report["scores"]["negative"]
    assert f"{neg['median']:.4g}" in text
    assert "MultipleNegativesRankingLoss" in text and "SentenceTransformerTrainer" in text


def test_card_loading_snippet_runs(real_run, monkeypatch):
    out, report, triplets = real_run
    text = write_card(out, report, {"triplets": len(triplets)}).read_text()
    local, hub, train = python_blocks(text)
    assert 'load_dataset("' in hub and '"triplets"' in hub
    monkeypatch.chdir(out)  # the snippet is written to run from the card's folder
    namespace: dict = {}
    exec(local, namespace)
    train_dataset = namespace["train_dataset"]
    assert train_dataset.column_names == report["output"]["train_columns"]
    assert len(train_dataset) == len(triplets)
    assert "train_dataset=train_dataset" in train
    # every column the snippets name is a column of the real dataset
    for block in (local, hub):
        for cols in re.findall(r"select_columns\((\[.*?\])\)", block):
            assert set(yaml.safe_load(cols)) <= set(triplets.column_names)


def test_card_loading_snippet_dataset_dict(real_run, tmp_path, monkeypatch):
    """The layout where DIR/dataset is a DatasetDict keyed by config name."""
    out, report, triplets = real_run
    verdicts = Dataset.from_dict(
        {
            "query_id": triplets["query_id"][:4],
            "doc_id": triplets["positive_id"][:4],
            "verdict": ["negative"] * 4,
            "model": ["judge-model-x"] * 4,
            "prompt_sha256": [PROMPT_SHA, PROMPT_SHA, "", "9a" * 32],
        }
    )
    trainable = load_from_disk(str(out / "dataset"))["triplets"]
    DatasetDict({"triplets": trainable, "verdicts": verdicts}).save_to_disk(str(tmp_path / "dataset"))
    card = write_card(tmp_path, report, {"triplets": len(triplets), "verdicts": 4}).read_text()
    # the hashes the saved rows carry reach the card even though this report names none
    assert f"verdicts.prompt_sha256 (judge-model-x) | `{PROMPT_SHA}`" in card and "9a" * 32 in card
    local = python_blocks(card)[0]
    assert '["triplets"]' in local
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(local, namespace)
    assert namespace["train_dataset"].column_names == report["output"]["train_columns"]


def test_report_html_plots(real_run, tmp_path):
    out, report, triplets = real_run
    configs = load_from_disk(str(out / "dataset"))  # the scores come from its triplets_provenance config
    page = write_report_html(tmp_path, extended(report), configs).read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    svgs = plots(page)
    # scores, false-negative rates, verdicts per stage, LLM tokens/cost, timings
    assert [s.get("aria-label") for s in svgs] == [
        "histograms of positive and negative scores",
        "false-negative rates",
        "verdict counts per judge stage",
        "LLM tokens and cost per stage",
        "seconds per stage",
    ]
    assert all(s.tag == "svg" and s.get("role") == "img" and len(s.findall(".//rect")) for s in svgs)
    assert not [e for s in svgs for e in s.iter() if any("href" in k for k in e.attrib)]  # nothing outside the page
    stages = [t.text for t in svgs[4].iter("text")]
    assert all(name in stages for name in report["stages"])  # every timed stage is a labelled bar
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    for figure in ("llm_listwise", "drop_false_negatives", "9000"):
        assert figure in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_report_html_without_data(real_run, tmp_path):
    out, report, triplets = real_run
    page = write_report_html(tmp_path, report).read_text()  # no triplets, no judge, no LLM
    assert len(plots(page)) == 1  # only the timings
    assert "No score histogram" in page and "No judge stages" in page and "No LLM requests" in page
    # A report without its required sections is refused where it is parsed, not rendered with blanks.
    with pytest.raises(ValidationError, match="output"):
        RunReport.model_validate({k: v for k, v in report.items() if k != "output"})


def test_no_secret_reaches_card_or_page(real_run, tmp_path, monkeypatch):
    out, report, triplets = real_run
    monkeypatch.setenv(FAKE_ENV, FAKE_KEY)
    env_only = "plain-secret-value-7Yh2"  # not key-shaped: caught only because the recipe names its variable
    monkeypatch.setenv("SYNTH_CARD_OTHER_KEY", env_only)
    r = extended(report)
    r["recipe"]["llm"]["api_key_env"] = "SYNTH_CARD_OTHER_KEY"
    r["recipe"]["name"] = f"run-{env_only}"
    card = write_card(tmp_path, r, {"triplets": len(triplets)}).read_text()
    page = write_report_html(tmp_path, r, triplets).read_text()
    for text in (card, page):
        assert FAKE_KEY not in text and env_only not in text
        assert "user:" not in text
    assert "api_key_env: SYNTH_CARD_OTHER_KEY" in card  # the variable's name is fine to publish
    assert "max_tokens: 256" in card  # token *counts* and limits are not secrets
    assert os.environ[FAKE_ENV] == FAKE_KEY


# -- local paths and user strings (issue 14): fast, no run needed ------------------------------------


def test_public_paths_rewrites_every_local_root(tmp_path):
    from synth.publish.paths import public_paths

    recipe_dir, cache = tmp_path / "proj" / "recipes", tmp_path / "cache"
    report = {
        "source": str(tmp_path / "proj" / "examples" / "data"),  # same project: relative to the recipe
        "findings": [f"{recipe_dir / 'data' / 'corpus.jsonl'}:7"],  # file:line keeps its line
        "cache": {str(cache / "embed" / "x.npy"): 1},  # keys too
        "home": str(Path.home() / "elsewhere" / "f.txt"),
        "url": "http://localhost:8000/v1",
        "hub": "org/name",
        "bundled": "bundled:all-MiniLM-L6-v2",
        "prose": "split in/out and a/b stay",
        "tag": "<b>x</b> </script>",
    }
    public = public_paths(report, recipe_dir, cache)
    assert public["source"] == "../examples/data"
    assert public["findings"] == ["data/corpus.jsonl:7"]
    assert public["cache"] == {"$SYNTH_CACHE_DIR/embed/x.npy": 1}
    assert public["home"] == "~/elsewhere/f.txt"
    for key in ("url", "hub", "bundled", "prose", "tag"):
        assert public[key] == report[key]
    assert str(tmp_path) not in json.dumps(public)
    # outside every known root only the name is kept
    assert public_paths("/opt/somewhere/model.bin", recipe_dir, cache) == ".../model.bin"


def test_escaping_round_trips_and_injects_nothing():
    from synth.publish.escape import md_code, md_text, py_str, safe_yaml

    evil = "<script>alert(1)</script>\n---\nlicense: evil`|"
    dumped = safe_yaml({"pretty_name": evil, "license": "mit"})
    assert "<" not in dumped and yaml.safe_load(dumped) == {"pretty_name": evil, "license": "mit"}
    for text in (md_text(evil), md_code(evil)):
        assert "<script" not in text and "\n" not in text and "&lt;script&gt;" in text
    assert eval(py_str(evil)) == evil and "<" not in py_str(evil)  # a valid Python literal
