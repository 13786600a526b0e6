"""``synth init DIR``: copy the shipped recipes, judge cascades, prompts and example data into DIR.

For a wheel install, where no checkout holds them: afterwards ``synth run DIR/recipes/resa2.yaml`` works,
because the recipes name their data and cascades relative to themselves (``../examples/...``,
``../judges/...``) and DIR keeps the shipped layout. Existing files are never overwritten without
``force``; each file is written to a temporary name and renamed, so a killed init leaves whole files only.
"""

from __future__ import annotations

from pathlib import Path

from synth.assets import ASSETS
from synth.core.errors import UserError
from synth.core.files import atomic_write_bytes

FOLDERS = ("recipes", "judges", "prompts", "examples")  # what a project folder needs, in the checkout's layout


def asset_files() -> list[Path]:
    """The shipped files to copy, relative to ``synth/assets`` (no bytecode caches)."""
    out = []
    for folder in FOLDERS:
        for path in sorted((ASSETS / folder).rglob("*")):
            rel = path.relative_to(ASSETS)
            if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
                out.append(rel)
    return out


def init_folder(dest: str | Path, force: bool = False) -> list[Path]:
    """Copy every asset file into ``dest`` (created); returns the paths written. Refuses, before writing
    anything, when one of them exists and ``force`` is false."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UserError(f"init: {dest}: exists and is not a folder")
    files = asset_files()
    for rel in files:  # a file where a folder must go: refused before anything is written
        for parent in (dest / rel).parents[: len(rel.parts) - 1]:
            if parent.exists() and not parent.is_dir():
                raise UserError(f"init: {parent}: exists and is not a folder")
    existing = [rel for rel in files if (dest / rel).exists() or (dest / rel).is_symlink()]
    if existing and not force:
        raise UserError(
            f"init: {dest}: {len(existing)} of the {len(files)} files are already there "
            f"(first: {dest / existing[0]}); pass --force to overwrite them"
        )
    written = []
    for rel in files:
        target = dest / rel
        if target.is_symlink():  # --force replaces the link itself, never the file it points to
            target.unlink()
        written.append(atomic_write_bytes(target, (ASSETS / rel).read_bytes()))
    return written


def summary(dest: str | Path, written: list[Path]) -> str:
    """What init wrote, one line per folder, and the command to try next."""
    dest = Path(dest)
    counts: dict[str, int] = {}
    for path in written:
        top = path.relative_to(dest).parts[0]
        counts[top] = counts.get(top, 0) + 1
    lines = [f"wrote {dest / top}/ ({n} files)" for top, n in counts.items()]
    lines.append(f"next: synth run {dest / 'recipes' / 'resa2.yaml'} --out {dest / 'runs' / 'resa2'}")
    return "\n".join(lines)
