"""How the suite is spread over CI's two pytest-xdist workers (``--dist loadgroup --no-loadscope-reorder``).

Each test module is one work unit (its module fixtures are built once, on one worker), so a module whose
tests are independent whole runs is split test by test instead (``SPLIT``): the four NPL/Cranfield probes
in one file cost ~25 minutes of one worker under load, an hour-long chain on its own. ``TOGETHER`` puts
modules that read the same expensive cache on one worker, one after the other, so the second finds what
the first computed instead of both computing it at once.

Units are then handed out heaviest first (``HEAVY``, from the CI logs' slowest durations): a 10-minute unit
that starts last would leave the other worker idle for its whole length. xdist's own order (more tests
first) does the opposite, sending the one-test full-SciFact run last; hence ``--no-loadscope-reorder``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Modules whose tests share no module fixture and each run a whole pipeline: one unit per test.
SPLIT = {"tests/e2e/test_clean_hard_negatives.py"}
# Modules run as one unit on one worker, in this order: index_ann's SciFact passages are the full corpus the
# SciFact run embeds (same model, max_seq_length and chunking), read back from the shared embedding cache.
TOGETHER = {
    "tests/e2e/test_scifact.py": "scifact-full",
    "tests/integration/test_index_ann.py": "scifact-full",
}
# Units in the order they start, heaviest first (worker-seconds in a CI log under load, /tmp/ciD.log era);
# a unit not listed starts after these, in collection order. A node id prefix names a test or a module.
HEAVY = [
    "tests/e2e/test_zero_label_run.py",  # ~950 s: cold LLM generation + chunked corpus
    # the other worker starts on an embedding-bound unit: two cold LLM generations side by side both crawl
    "tests/e2e/test_clean_hard_negatives.py::test_the_main_recipes_mined_half_meets_the_bar[npl]",  # ~640 s
    "tests/e2e/test_synthetic_run.py",  # ~750 s: cold LLM generation, killed and resumed
    "scifact-full",  # ~600 s: 5,183 SciFact passages at 256 tokens, then the ANN tests on them
    "tests/e2e/test_clean_hard_negatives.py::test_the_probe_meets_the_bar_on_every_shared_multi_positive_"
    "collection[npl]",  # ~540 s
    "tests/e2e/test_ray.py",  # ~550 s: a cluster, two runs, a killed worker
    "tests/e2e/test_full_recipe.py",  # ~500 s
    "tests/e2e/test_edges_cli.py",  # 220-470 s
    "tests/e2e/test_eval.py",  # ~300 s: training runs
    "tests/integration/test_train_judge.py",  # ~270 s
    "tests/e2e/test_edges_cache.py",  # ~250 s
    "tests/e2e/test_clean_hard_negatives.py",  # its Cranfield probes (~180 s each) and example runs
    "tests/e2e/test_relabel.py",
    "tests/e2e/test_hostile_cli.py",
]


def _module(item: pytest.Item, repo: Path) -> str:
    return Path(item.path).resolve().relative_to(repo).as_posix()


def unit_of(item: pytest.Item, repo: Path) -> str:
    """The work unit (xdist group) a test belongs to."""
    module = _module(item, repo)
    if module in SPLIT:
        return item.nodeid
    return TOGETHER.get(module, module)


def _rank(unit: str, nodeid: str) -> int:
    for i, prefix in enumerate(HEAVY):
        if unit == prefix or nodeid.startswith(prefix):
            return i
    return len(HEAVY)


def schedule(config: pytest.Config, items: list[pytest.Item], repo: Path) -> None:
    """Mark each test with its unit's xdist group and sort units heaviest first (a stable sort: a module's
    tests keep their order). Only under ``--dist loadgroup``; ``-n 0`` runs keep the collection order."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    units = {item.nodeid: unit_of(item, repo) for item in items}
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(name=units[item.nodeid]))
    # the modules of one TOGETHER unit run in the order TOGETHER lists them (the one that fills the cache first)
    order = {m: i for i, m in enumerate(TOGETHER)}
    items.sort(key=lambda it: (_rank(units[it.nodeid], it.nodeid), order.get(_module(it, repo), 0)))
