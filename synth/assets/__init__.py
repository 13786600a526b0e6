"""What ships inside the package: the prompts, the judge cascades, the example recipes, the starter
personas and the example data (a 1,200-document SciFact subset). The top-level ``prompts/``,
``judges/``, ``recipes/`` and ``examples/`` of a checkout are links to these folders, so there is one
copy. ``synth init DIR`` copies them out for users who installed from a wheel.

A new prompt, cascade or recipe goes in its folder here; ``pyproject.toml``'s package-data picks it up.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
PROMPTS = ASSETS / "prompts"
JUDGES = ASSETS / "judges"
RECIPES = ASSETS / "recipes"
EXAMPLES = ASSETS / "examples"
STARTER_PERSONAS = ASSETS / "personas" / "starter_personas.jsonl"
