"""How the suite is spread over CI's two pytest-xdist workers (``--dist loadscope --no-loadscope-reorder``,
with the scope of a test given here through ``pytest_xdist_make_scheduler`` in tests/conftest.py).

Each test module is one work unit (its module fixtures are built once, on one worker), so a module whose
tests are independent whole runs is split test by test instead (``SPLIT``): the four NPL/Cranfield probes
in one file cost ~25 minutes of one worker under load, an hour-long chain on its own. ``TOGETHER`` puts
modules that read the same expensive cache on one worker, one after the other, so the second finds what
the first computed instead of both computing it at once.

Units are then handed out heaviest first (``HEAVY``, from the CI logs' slowest durations): a 10-minute unit
that starts last would leave the other worker idle for its whole length. xdist's own order (more tests
first) does the opposite, sending the one-test full-SciFact run last; hence ``--no-loadscope-reorder``.

(Not ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8 groups by rewriting ``item._nodeid``,
which pytest 9.2's ``nodeid`` no longer reads, so every marked test would stay a unit of its own.)
"""

from __future__ import annotations

import os

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
    "scifact-full",  # 2,340 SciFact passages at 128 tokens, then the ANN tests on them
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


def unit_of(nodeid: str) -> str:
    """The work unit (xdist scope) of a test, from its node id (``tests/.../test_x.py::test_y[param]``)."""
    module = nodeid.split("::", 1)[0]
    if module in SPLIT:
        return nodeid
    return TOGETHER.get(module, module)


def _rank(nodeid: str) -> tuple[int, int]:
    unit, module = unit_of(nodeid), nodeid.split("::", 1)[0]
    # the modules of one TOGETHER unit run in the order TOGETHER lists them (the one that fills the cache first)
    within = list(TOGETHER).index(module) if module in TOGETHER else 0
    for i, prefix in enumerate(HEAVY):
        if unit == prefix or nodeid.startswith(prefix):
            return i, within
    return len(HEAVY), within


def order(items: list[pytest.Item]) -> None:
    """Heaviest units first, on xdist's workers (the controller takes the order they collected in); a stable
    sort, so a module's tests keep their order. ``-n 0`` runs keep the collection order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda it: _rank(it.nodeid))


def make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` with ``unit_of`` as the scope; any other mode keeps xdist's own scheduler."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    return UnitScheduling(config, log)
