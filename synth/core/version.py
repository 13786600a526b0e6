"""synth's version, as a run records it (``report.json`` -> ``environment.synth``, and the card's "Made with").

``pyproject.toml`` holds the one number. When synth runs from its source tree (the ``pyproject.toml`` beside
the ``synth/`` folder names the project ``synth``), that file describes the code actually running, so it wins:
an editable install's metadata is written at install time and goes stale when the number changes without a
reinstall. Otherwise (an installed wheel) the installed metadata says it. With neither, the version is
``"unknown"`` rather than a number nothing vouches for.
"""

from __future__ import annotations

import functools
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@functools.cache
def version() -> str:
    source = _source_tree_version(PYPROJECT)
    if source is not None:
        return source
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("synth")
    except PackageNotFoundError:
        return "unknown"


def _source_tree_version(path: Path) -> str | None:
    """``[project] version`` of ``path`` when it is synth's own ``pyproject.toml``; None otherwise."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: no TOML reader in the standard library; the metadata answers
        return None
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != "synth" or not isinstance(project.get("version"), str):
        return None
    return project["version"]
