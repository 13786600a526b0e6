"""No local path in a published file: ``public_paths`` rewrites the absolute paths in a report.

``report.json``, the card and ``report.html`` are written to be pushed to the Hub, but a resolved
recipe and the reports name files by their absolute paths (the home directory, the cache, the
checkout). Each absolute path found in a string is rewritten to the most telling form that names no
local folder, first match wins:

1. under the cache folder -> ``$SYNTH_CACHE_DIR/...``
2. under the recipe's folder -> relative to it (``data/corpus.jsonl``);
3. under the Python environment (a bundled model) -> ``<python>/...``;
4. in the recipe's project (a common ancestor below ``/`` that is not the home directory or above it)
   -> relative to the recipe's folder (``../examples/scifact-mini``), so the card's recipe runs again
   when saved beside the original;
5. under synth's own checkout -> ``<synth>/...``; under the home directory -> ``~/...``;
6. anywhere else -> ``.../<name>`` (the location is dropped, the name kept).

Only absolute paths are touched: relative paths, Hub ids (``org/name``), URLs and ``bundled:`` names stay.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

CACHE_LABEL = "$SYNTH_CACHE_DIR"
# An absolute POSIX path: "/" + at least one character, at the start or after whitespace, a quote, "=",
# an opening bracket or a comma (so never inside a URL "://", a relative "a/b" or a tag "</b>"); it ends
# at whitespace, quotes, brackets, ":" (so "file:line" keeps its line).
_ABSOLUTE = re.compile(r"(?<![^\s\"'=(\[{,])/[^\s\"'`<>|;,:()\[\]{}]+")


def public_paths(obj, recipe_dir: str | Path | None = None, cache_dir: str | Path | None = None):
    """A copy of ``obj`` (dicts, lists, strings, other values as they are) with every absolute local
    path in its strings, keys included, rewritten as the module says."""
    rewrite = _Rewriter(recipe_dir, cache_dir)

    def walk(x):
        if isinstance(x, dict):
            return {walk(k) if isinstance(k, str) else k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        if isinstance(x, str) and "/" in x:
            return _ABSOLUTE.sub(lambda m: rewrite(m.group(0)), x)
        return x

    return walk(obj)


def _norm(path: str | Path | None) -> str | None:
    if not path:
        return None
    p = os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))
    return None if p == os.sep else p


def _under(path: str, root: str | None) -> str | None:
    """``path`` relative to ``root`` ("" for the root itself), or None when it is not under it."""
    if root is None:
        return None
    if path == root:
        return ""
    return path[len(root) + 1 :] if path.startswith(root + os.sep) else None


def _join(label: str, rest: str) -> str:
    return f"{label}/{rest}" if rest else label


class _Rewriter:
    def __init__(self, recipe_dir, cache_dir):
        self.recipe = _norm(recipe_dir)
        self.cache = _norm(cache_dir)
        self.home = _norm(Path.home())
        self.python = [(root, "<python>") for root in {_norm(sys.prefix), _norm(sys.base_prefix)} if root]
        self.labelled = [
            (root, label)
            for root, label in (
                (_norm(Path(__file__).resolve().parents[2]), "<synth>"),  # synth's checkout
                (self.home, "~"),
            )
            if root
        ]

    def __call__(self, raw: str) -> str:
        path = _norm(raw)
        if path is None:
            return raw
        rest = _under(path, self.cache)
        if rest is not None:
            return _join(CACHE_LABEL, rest)
        rest = _under(path, self.recipe)
        if rest is not None:
            return rest or "."
        for root, label in self.python:  # installed packages (a bundled model) are not project files
            if (rest := _under(path, root)) is not None:
                return _join(label, rest)
        if self.recipe is not None and self._same_project(path):
            return os.path.relpath(path, self.recipe)
        for root, label in self.labelled:
            if (rest := _under(path, root)) is not None:
                return _join(label, rest)
        return ".../" + os.path.basename(path)

    def _same_project(self, path: str) -> bool:
        common = os.path.commonpath([path, self.recipe])
        if common == os.sep:
            return False
        # a common ancestor at or above the home directory is the user's whole tree, not one project
        return self.home is None or _under(self.home, common) is None
