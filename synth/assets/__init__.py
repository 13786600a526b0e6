"""What ships inside the package: the prompts, the judge cascades, the example recipes, the starter
personas and the example data (a 1,200-document SciFact subset). The top-level ``prompts/``,
``judges/``, ``recipes/`` and ``examples/`` of a checkout are links to these folders, so there is one
copy. ``synth init DIR`` (``init.py``) copies the recipes, cascades, prompts and example data out for users
who installed from a wheel; the prompts and personas a run needs are read from here either way.

A new prompt, cascade or recipe goes in its folder here; ``pyproject.toml``'s package-data picks it up
(``tests/e2e/test_wheel.py`` fails when the wheel misses a file of this folder).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
PROMPTS = ASSETS / "prompts"
JUDGES = ASSETS / "judges"
RECIPES = ASSETS / "recipes"
EXAMPLES = ASSETS / "examples"
STARTER_PERSONAS = ASSETS / "personas" / "starter_personas.jsonl"
