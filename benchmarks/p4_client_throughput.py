"""P4: client throughput of ``OpenAIBackend.generate`` against a server that answers in a fixed time.

The fake OpenAI server (``tests/support/fake_openai.py``) runs in a separate process (so its CPU does not
share the client's GIL) and answers every chat request after ``--delay`` seconds. With ``--concurrency``
requests in flight the ideal rate is concurrency / delay (640 req/s for 64 and 100 ms); the script reports
the achieved rate as a fraction of it. Goal >= 0.9.

    python benchmarks/p4_client_throughput.py [-n 2000] [--concurrency 64] [--delay 0.1] [--repeat 3] [--schema]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # synth without an install (before _common)
import _common as C


def start_server(delay: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.fake_openai", "--port", "0", "--delay", str(delay)],
        cwd=C.ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise SystemExit(f"the fake server did not start: {line!r}")
    return proc, line.split()[-1]


def cpu_seconds(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=2000, help="requests per run")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.1, help="server answer time, seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--schema", action="store_true", help="also a run with a JSON schema (validation included)")
    args = ap.parse_args()

    from synth.llm.base import ChatRequest
    from synth.llm.config import OpenAIConfig
    from synth.llm.openai import OpenAIBackend

    ideal = args.concurrency / args.delay
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string"}, "kind": {"enum": ["a", "b"]}},
        "required": ["query", "kind"],
        "additionalProperties": False,
    }
    workloads = [("text", None)] + ([("json schema", schema)] if args.schema else [])
    proc, url = start_server(args.delay)
    rows = []
    try:
        cfg = OpenAIConfig(
            base_url=url,
            model="fake",
            api_key_env=None,
            concurrency=args.concurrency,
            probe_schema=False,
            max_retries=0,
        )
        backend = OpenAIBackend(cfg)
        backend.start()
        for name, sch in workloads:
            requests = [
                ChatRequest.make(
                    [
                        ("system", "You write search queries."),
                        ("user", f"Passage {i}: a short passage about topic {i}."),
                    ],
                    {"temperature": 0.7, "max_tokens": 64, "seed": i},
                    sch,
                )
                for i in range(args.n)
            ]
            backend.generate(requests[: args.concurrency], lambda i, r: None)  # warm-up: connections, imports
            fractions, cpus, server_cpus, failed = [], [], [], 0
            for _ in range(args.repeat):
                done = []
                s0, c0, t0 = cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
                backend.generate(requests, lambda i, r, done=done: done.append(r))
                wall = time.perf_counter() - t0
                cpus.append((time.process_time() - c0) / args.n * 1e3)
                server_cpus.append((cpu_seconds(proc.pid) - s0) / args.n * 1e3)
                failed += sum(not r.ok for r in done)
                fractions.append(args.n / wall / ideal)
                print(f"{name}: {args.n / wall:.0f} req/s = {fractions[-1]:.3f} of ideal", flush=True)
            f = statistics.median(fractions)
            rows.append(
                [
                    name,
                    args.n,
                    args.concurrency,
                    args.delay,
                    ideal,
                    f * ideal,
                    f,
                    min(fractions),
                    "yes" if f >= 0.9 else "NO",
                    statistics.median(cpus),
                    statistics.median(server_cpus),
                    failed,
                ]
            )
        backend.close()
    finally:
        proc.terminate()
        proc.wait(10)

    headers = [
        "workload",
        "requests",
        "concurrency",
        "server delay s",
        "ideal req/s",
        "achieved req/s",
        "fraction (median)",
        "fraction (worst)",
        ">= 0.9",
        "client CPU ms/req",
        "server CPU ms/req",
        "failed",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = [
        (
            f"OpenAIBackend.generate over loopback HTTP; the fake server (asyncio, stdlib) in its own process answers "
            f"after {args.delay:g}s; median of {args.repeat} runs after a warm-up of {args.concurrency} requests."
        ),
        (
            "Ideal = concurrency / delay; the last wave of requests adds one delay, so the reachable fraction is "
            f"about {args.n / (args.n + args.concurrency):.3f} for these settings."
        ),
        (
            "Client CPU includes JSON encoding, HTTP, answer validation and the callback; the machine's 2 cores are "
            "shared by client, server and anything else running."
        ),
    ]
    C.write_result("P4: OpenAI-compatible client throughput", table, notes)


if __name__ == "__main__":
    main()
