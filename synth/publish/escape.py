"""User strings (recipe names, descriptions, licences, model and prompt names, anything from a recipe
or the data) in the published card: each context gets its own escaping, so no string can inject HTML,
Markdown structure, YAML keys or code.

* Markdown text: HTML-escaped (``<script>`` shows as text), Markdown punctuation backslash-escaped, one line.
* Code: ``<code>`` with HTML-escaped content; a backtick in the string cannot end a Markdown code span.
* YAML (front matter, the recipe block): ``yaml.safe_dump``, so a value never adds a key; strings that
  hold a line break or ``<`` are double-quoted and ``<`` is written ``\\x3C``, so no raw tag is in the
  file while ``yaml.safe_load`` gives the exact string back.
* Python snippets: a string literal (``json.dumps`` is valid Python), ``<`` as ``\\x3c``.
"""

from __future__ import annotations

import html
import json
import re

import yaml

_MARKDOWN = re.compile(r"([\\`*_\[\]#|~!])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85]+")


def one_line(value) -> str:
    return _LINE_BREAKS.sub(" ", "" if value is None else str(value))


def md_text(value) -> str:
    """``value`` as inline Markdown text that renders exactly as written."""
    return _MARKDOWN.sub(r"\\\1", html.escape(one_line(value)))


def md_code(value) -> str:
    """``value`` as inline code."""
    return f"<code>{html.escape(one_line(value))}</code>"


def py_str(value) -> str:
    """A Python string literal for ``value``."""
    return json.dumps(str(value)).replace("<", "\\x3c")


def slug(value, default: str = "synth-dataset") -> str:
    """A Hub repo name from free text: letters, digits, ``.``, ``_`` and ``-`` only."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", str(value or "")).strip("-.")[:96]
    return out or default


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str):
    quote = "<" in value or any(c in value for c in "\r\n\u2028\u2029\x85")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if quote else None)


_Dumper.add_representer(str, _str)


def safe_yaml(obj) -> str:
    """YAML for ``obj`` with no raw ``<`` in it; every ``<`` is inside a double-quoted scalar."""
    text = yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    return text.replace("<", "\\x3C")
