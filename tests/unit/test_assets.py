"""What ships in synth/assets and ``synth init``'s copy of it (synth/assets/init.py); relative paths in the
shipped files, read through the checkout's linked folders and from an init folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synth.assets import ASSETS, JUDGES, PROMPTS, RECIPES, STARTER_PERSONAS
from synth.assets.init import FOLDERS, asset_files, init_folder, summary
from synth.core.errors import UserError
from synth.judge.config import load_cascade
from synth.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_the_checkout_folders_are_links_to_the_assets():
    for name in FOLDERS:
        assert (REPO / name).is_symlink() and (REPO / name).resolve() == ASSETS / name, name
    assert STARTER_PERSONAS.is_file() and list(PROMPTS.glob("*.j2")) and list(JUDGES.glob("*.yaml"))


def test_init_copies_every_asset_and_the_recipes_resolve_inside(tmp_path):
    dest = tmp_path / "proj"
    written = init_folder(dest)
    assert sorted(p.relative_to(dest) for p in written) == sorted(asset_files())
    assert {p.parts[0] for p in asset_files()} == set(FOLDERS)
    assert not [p for p in asset_files() if "__pycache__" in p.parts or p.suffix == ".pyc"]
    for rel in asset_files():
        assert (dest / rel).read_bytes() == (ASSETS / rel).read_bytes()
    assert not list(dest.rglob(".*.tmp"))  # every temp name was renamed into place
    for recipe in RECIPES.glob("*.yaml"):  # data and cascades resolve inside the init folder, not the package
        r = load_recipe(dest / "recipes" / recipe.name)
        assert Path(r.source.path).is_relative_to(dest), recipe.name
        if r.judge is not None:
            assert Path(r.judge.cascade) == dest / "judges" / Path(r.judge.cascade).name
    lines = summary(dest, written).splitlines()
    assert lines[-1] == f"next: synth run {dest}/recipes/resa2.yaml --out {dest}/runs/resa2"
    assert f"wrote {dest}/prompts/ ({len(list(PROMPTS.iterdir()))} files)" in lines


def test_init_never_overwrites_without_force(tmp_path):
    dest = tmp_path / "proj"
    (dest / "recipes").mkdir(parents=True)
    mine = dest / "recipes" / "resa2.yaml"
    mine.write_text("my own recipe\n")
    with pytest.raises(UserError, match=r"^init: .*: 1 of the \d+ files are already there .*pass --force"):
        init_folder(dest)
    assert mine.read_text() == "my own recipe\n" and len(list(dest.rglob("*"))) == 2  # nothing written
    init_folder(dest, force=True)
    assert mine.read_bytes() == (RECIPES / "resa2.yaml").read_bytes()


def test_init_force_replaces_a_link_not_its_target(tmp_path):
    outside = tmp_path / "outside.yaml"
    outside.write_text("keep me\n")
    dest = tmp_path / "proj"
    (dest / "recipes").mkdir(parents=True)
    os.symlink(outside, dest / "recipes" / "topk.yaml")
    init_folder(dest, force=True)
    assert outside.read_text() == "keep me\n"
    assert not (dest / "recipes" / "topk.yaml").is_symlink()


def test_a_file_where_a_folder_goes_is_one_line_and_nothing_is_written(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        init_folder(tmp_path / "f")
    dest = tmp_path / "proj"
    dest.mkdir()
    (dest / "prompts").write_text("x")  # recipes/ and judges/ come first: they must not be written either
    with pytest.raises(UserError, match=f"^init: {dest / 'prompts'}: exists and is not a folder$"):
        init_folder(dest)
    assert [p.name for p in dest.iterdir()] == ["prompts"]


def test_a_cascade_model_beside_a_linked_judges_folder(tmp_path):
    """``judges/ce_only.yaml`` names ``../runs/judge-ce``: read through a link to the package's judges/ (the
    checkout's layout), that is the project's runs/, as README's ``synth train-judge --out runs/judge-ce`` writes."""
    project = tmp_path / "proj"
    (project / "runs" / "judge-ce").mkdir(parents=True)
    os.symlink(JUDGES, project / "judges")
    assert load_cascade(project / "judges" / "ce_only.yaml").stages[0].model == str(project / "runs" / "judge-ce")
    init = tmp_path / "init"  # and in an init folder, plain files
    init_folder(init)
    (init / "runs" / "judge-ce").mkdir(parents=True)
    assert load_cascade(init / "judges" / "ce_only.yaml").stages[0].model == str(init / "runs" / "judge-ce")
