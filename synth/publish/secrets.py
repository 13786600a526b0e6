"""Credentials never reach a published file: ``scrub_secrets`` cleans a report before the card and the
HTML page render it, ``scrub_text`` cleans rendered text. A recipe names the *environment variable*
that holds a key, never the key, but the card is published, so anything that looks like a credential
is removed again here.
"""

from __future__ import annotations

import os
import re

from synth.report.run import RunReport

REDACTED = "<redacted>"

# Key names whose string values are credentials. `*_env` keys hold variable NAMES and stay (checked below).
_SECRET_KEY = re.compile(r"api_?key|token|secret|password|passwd|authorization|credential", re.IGNORECASE)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Shapes of well-known keys, caught wherever they appear (a key pasted into a name or a URL).
_SECRET_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|xox[abp]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})\b|Bearer\s+[A-Za-z0-9._\-]{8,}"
)
# The user:password part of a URL. Anchored on "://" rather than on the scheme: a scheme pattern such as
# ``[a-z][a-z0-9+.-]*://`` is retried from every letter of a long word, quadratic on a 200 KB name. Each
# "://" scans only up to the next "/", so the scans never overlap and the whole pass is linear.
_URL_USERINFO = re.compile(r"://[^/@\s]+@")
_ENV_SECRET_NAME = re.compile(r"api_?key|token|secret|password", re.IGNORECASE)


def _secret_env_values(report: dict) -> set[str]:
    """Values of every environment variable the report names as a key holder, and of any variable whose
    name says it is a credential: these strings must never be written."""
    names: set[str] = set()

    def walk(x) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if isinstance(v, str) and str(k).endswith("_env") and _ENV_NAME.match(v):
                    names.add(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(report)
    names.update(k for k in os.environ if _ENV_SECRET_NAME.search(k))
    # Short values ("1", "true") are flags, not keys; replacing them would mangle the text.
    return {os.environ[n] for n in names if len(os.environ.get(n, "")) >= 8}


def scrub_text(text: str, secrets: set[str] = frozenset()) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _SECRET_SHAPES.sub(REDACTED, text)
    return _URL_USERINFO.sub("://" + REDACTED + "@", text)


def scrub_secrets(report: dict) -> tuple[dict, set[str]]:
    """A deep copy of ``report`` with credentials removed, and the secret values to scrub from any text
    rendered later. String values under credential-like keys are redacted (``*_env`` keys keep a variable
    name); numbers stay, so ``max_tokens`` and token counts survive."""
    secrets = _secret_env_values(report)

    def clean(x, key: str = ""):
        if isinstance(x, dict):
            return {k: clean(v, str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v, key) for v in x]
        if isinstance(x, str):
            if _SECRET_KEY.search(key) and not (key.endswith("_env") and _ENV_NAME.match(x)) and x:
                return REDACTED
            return scrub_text(x, secrets)
        return x

    return clean(report), secrets


def scrub_report(report: RunReport) -> tuple[RunReport, set[str]]:
    """``scrub_secrets`` on a typed report: the cleaned copy is validated again (redaction replaces strings
    only, so it still fits the model) and the renderers read its attributes."""
    clean, secrets = scrub_secrets(report.model_dump())
    return RunReport.model_validate(clean), secrets
