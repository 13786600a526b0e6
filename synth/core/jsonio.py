"""JSON output shared by the report and the probe: numpy scalars allowed, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json_atomic(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON at ``path``, through the one atomic writer (``synth.core.files``)."""
    from synth.core.files import write_json

    write_json(path, obj, default=json_default)
