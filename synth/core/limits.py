"""Every bound that input can push against, in one place, each with the environment variable that moves it.

Recipes, prompt folders, corpora, LLM replies and Hub replies are untrusted: each size they drive and each
wait they cause has a limit here. Crossing one is one line (a ``UserError``, exit code 2) that names the
limit and its variable; nothing grows or waits without end. The README's "Trust and limits" section lists
this table.

    from synth.core.limits import limit
    max_bytes = limit("max_line_bytes")

A variable that is set must parse as a finite number > 0 (``inf``, ``nan``, ``0`` and text are refused
with one line), so that a typo never turns a bound off.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from synth.core.errors import UserError


@dataclass(frozen=True)
class Limit:
    env: str
    default: float
    unit: str  # "bytes", "characters", "seconds", "items"
    what: str  # what it bounds, for the README and error lines
    integer: bool = True


MiB = 1 << 20

LIMITS: dict[str, Limit] = {
    # input files
    "max_line_bytes": Limit("SYNTH_MAX_LINE_BYTES", 64 * MiB, "bytes", "one line of a JSONL/TSV input file"),
    # prompts (templates from a recipe's prompts_dir run in a sandbox)
    "max_prompt_chars": Limit("SYNTH_MAX_PROMPT_CHARS", 1_000_000, "characters", "one rendered prompt"),
    "max_template_range": Limit("SYNTH_MAX_TEMPLATE_RANGE", 10_000, "items", "range() inside a prompt template"),
    "max_template_steps": Limit(
        "SYNTH_MAX_TEMPLATE_STEPS", 100_000, "steps", "loop iterations, range items, calls and filters in one render"
    ),
    # replies from LLM endpoints and the Hub
    "max_reply_bytes": Limit("SYNTH_MAX_REPLY_BYTES", 32 * MiB, "bytes", "one HTTP reply (LLM endpoint or Hub)"),
    "max_retry_after": Limit(
        "SYNTH_MAX_RETRY_AFTER", 120, "seconds", "a server's Retry-After before synth stops and says so", False
    ),
    "hub_timeout": Limit("SYNTH_HUB_TIMEOUT", 60, "seconds", "one Hub call, start to end (a deadline)", False),
    "min_upload_rate": Limit(
        "SYNTH_MIN_UPLOAD_BYTES_PER_S", 1 << 20, "bytes/s", "an upload's assumed slowest rate (extends its deadline)"
    ),
    # waits on local resources
    "lock_timeout": Limit("SYNTH_LOCK_TIMEOUT", 600, "seconds", "waiting for a cache or output lock", False),
    "ray_start_timeout": Limit(
        "SYNTH_RAY_START_TIMEOUT", 120, "seconds", "connecting to or starting a Ray cluster", False
    ),
    "ray_stall_timeout": Limit(
        "SYNTH_RAY_STALL_TIMEOUT", 900, "seconds", "a Ray stage making no progress (no task finished)", False
    ),
}


def limit(name: str) -> float | int:
    """The bound ``name`` (a key of ``LIMITS``): its environment variable when set, else its default."""
    spec = LIMITS[name]
    raw = os.environ.get(spec.env, "").strip()
    if not raw:
        return int(spec.default) if spec.integer else float(spec.default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0) or (spec.integer and value != int(value)):
        kind = "a whole number" if spec.integer else "a finite number"
        raise UserError(f"{spec.env}={raw[:40]!r}: expected {kind} of {spec.unit} > 0 ({spec.what})")
    return int(value) if spec.integer else value


def over_limit(name: str, where: str, got: str = "") -> UserError:
    """The one-line error for crossing ``name``: what crossed it, the bound, and the variable that moves it."""
    spec, bound = LIMITS[name], limit(name)
    size = f" ({got})" if got else ""
    shown = f"{bound:,}" if isinstance(bound, int) else f"{bound:g}"
    return UserError(
        f"{where}: larger than the limit for {spec.what}{size}: {shown} {spec.unit}; set {spec.env} to raise it"
    )
