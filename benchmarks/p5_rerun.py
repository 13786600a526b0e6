"""P5: rerun a finished recipe. Wall time of the rerun as a fraction of the first run (goal <= 0.1),
and the LLM calls the rerun makes (goal 0).

Both runs are the real CLI (`python -m synth run ...`) in a child process, on one fresh cache folder:
the first run starts cold (no embeddings, no LLM responses cached), the second reuses everything.
Process start-up (Python, imports) counts in both.

    python benchmarks/p5_rerun.py [--recipe recipes/synthetic_queries.yaml]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def run_once(recipe: Path, out: Path, cache: Path) -> tuple[float, dict]:
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "synth", "run", str(recipe), "--out", str(out)],
        env=env,
        cwd=C.ROOT,
        capture_output=True,
        text=True,
        timeout=4 * 3600,  # a benchmark run, not a hang
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"synth run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / "report.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(C.ROOT / "recipes" / "synthetic_queries.yaml"))
    args = ap.parse_args()
    recipe = Path(args.recipe).resolve()
    work = Path(tempfile.mkdtemp(prefix="synth-p5-"))
    try:
        first_s, first = run_once(recipe, work / "first", work / "cache")
        second_s, second = run_once(recipe, work / "second", work / "cache")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, wall, rep in (("first run (cold cache)", first_s, first), ("rerun (finished recipe)", second_s, second)):
        llm = rep["llm"]
        rows.append(
            [
                name,
                wall,
                llm["requests_sent"],
                llm["cache_hits"],
                llm["tokens_in"] + llm["tokens_out"],
                rep["embedding"]["chunks_reused"] if "embedding" in rep else None,
                rep["embedding"]["chunks_total"] if "embedding" in rep else None,
            ]
        )
    ratio = second_s / first_s
    rows.append(["rerun / first", ratio, None, None, None, None, None])
    table = C.md_table(
        ["run", "wall s", "LLM requests sent", "cache hits", "tokens sent", "embed chunks reused", "embed chunks"], rows
    )
    print(table)
    stage_lines = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in second["stages"].items())
    C.write_result(
        f"P5: rerun of a finished recipe ({recipe.relative_to(C.ROOT) if recipe.is_relative_to(C.ROOT) else recipe})",
        table,
        [
            f"goal: rerun / first <= 0.1 -> {ratio:.3f} ({'met' if ratio <= 0.1 else 'NOT met'}); "
            f"LLM calls on rerun: {second['llm']['requests_sent']} (goal 0)",
            f"rerun stages: {stage_lines}; the rest of the rerun's wall time is process start-up and imports",
            "first run stages: " + ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in first["stages"].items()),
        ],
    )


if __name__ == "__main__":
    main()
