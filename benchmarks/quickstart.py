"""The README's quickstart, twice, each from an empty cache: wall time, peak RSS, LLM requests, and whether
the two runs wrote the same dataset (every config, row by row) and the same Tevatron file.

Goals (issue 14): wall time <= 180 s on 2 cores from an empty cache; the two datasets identical. Both runs
are the real CLI (`python -m synth run recipes/resa2_plus_synthetic.yaml --out DIR`) in a child process with
its own empty `SYNTH_CACHE_DIR`, so nothing (embeddings, LLM responses, verdicts) carries over.

    python benchmarks/quickstart.py [--runs 2] [--recipe recipes/resa2_plus_synthetic.yaml]
"""

from __future__ import annotations

import argparse
import hashlib
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


def run_once(recipe: Path, out: Path, cache: Path) -> dict:
    """One cold run under /usr/bin/time-like accounting: wall seconds and the child's peak RSS."""
    env = {**os.environ, "SYNTH_CACHE_DIR": str(cache), "SYNTH_PROGRESS": "0", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    # A fresh interpreter per run, so ru_maxrss is this run's peak and not the maximum over earlier children.
    probe = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "synth", "run", str(recipe), "--out", str(out)],
        env=env,
        cwd=C.ROOT,
        capture_output=True,
        text=True,
        timeout=4 * 3600,  # a benchmark run, not a hang
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"synth run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    return {"wall": wall, "peak_gib": peak_kib / 2**20, "report": report, "digest": dataset_digest(out)}


def dataset_digest(out: Path) -> dict[str, str]:
    """sha256 per config of the saved DatasetDict (rows as canonical JSON, in order), and of each extra file."""
    import datasets

    dd = datasets.load_from_disk(str(out / "dataset"))
    digest = {}
    for name in sorted(dd):
        h = hashlib.sha256()
        for row in dd[name]:
            h.update(json.dumps(row, sort_keys=True, default=str).encode())
        digest[f"{name} ({len(dd[name])} rows)"] = h.hexdigest()[:16]
    for path in sorted(p for p in out.rglob("*.jsonl") if "dataset" not in p.parts):
        digest[str(path.relative_to(out))] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return digest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(C.ROOT / "recipes" / "resa2_plus_synthetic.yaml"))
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    recipe = Path(args.recipe).resolve()
    work = Path(tempfile.mkdtemp(prefix="synth-quickstart-"))
    try:
        runs = [run_once(recipe, work / f"out{i}", work / f"cache{i}") for i in range(args.runs)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for i, r in enumerate(runs):
        rep = r["report"]
        rows.append(
            [
                f"run {i + 1} (empty cache)",
                r["wall"],
                r["peak_gib"],
                rep["output"]["rows"],
                rep["llm"]["requests_sent"],
                rep["llm"]["tokens_out"],
                ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in rep["stages"].items() if v["seconds"] >= 1),
            ]
        )
    table = C.md_table(["run", "wall s", "peak RSS GiB", "rows", "LLM requests", "tokens out", "stages ≥ 1 s"], rows)
    first = runs[0]["digest"]
    same = all(r["digest"] == first for r in runs[1:])
    differing = sorted(
        {k for r in runs[1:] for k in set(first) | set(r["digest"]) if r["digest"].get(k) != first.get(k)}
    )
    digests = C.md_table(
        ["config / file", *[f"run {i + 1}" for i in range(len(runs))]],
        [[k, *[r["digest"].get(k, "-") for r in runs]] for k in sorted(set().union(*(r["digest"] for r in runs)))],
    )
    print(table + "\n\n" + digests)
    worst = max(r["wall"] for r in runs)
    C.write_result(
        f"Quickstart from an empty cache ({recipe.name})",  # the same section whether run from a clone or a wheel
        table + "\n\n" + digests,
        [
            f"goal: wall <= 180 s -> slowest {worst:.0f} s ({'met' if worst <= 180 else 'NOT met'}); "
            f"identical datasets -> {'yes' if same else 'NO: ' + ', '.join(differing)}",
            "digest: sha256 (first 16 hex) over each config's rows as canonical JSON, in order; files byte for byte",
        ],
    )


if __name__ == "__main__":
    main()
