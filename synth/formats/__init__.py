"""Readers and writers of the on-disk formats synth reads and writes: sentence-transformers datasets
(``st``: the layouts and the run's ``DatasetDict`` of configs; ``hf``: relabel's HF input and output),
Tevatron JSONL (``tevatron``) and the BEIR folder (``beir``); ``rows`` builds a run's training rows with
their provenance.

Each format is one module that fills in ``base.Format`` (``accepts`` / ``read`` / ``write`` for relabel,
``export`` for a run's ``output.files``) as its ``FORMAT``. A new format is one module and one line in
``FORMATS``; a new sentence-transformers layout is one entry in ``st.LAYOUTS``.
"""

from __future__ import annotations

from pathlib import Path

from synth.core.errors import UserError
from synth.core.records import Example
from synth.formats import beir, hf, tevatron
from synth.formats.base import Format, Group, RelabelInput

# name -> format. Relabel asks ``accepts`` in this order; a run writes its ``output.files`` in this order.
# The names are what users and reports see: relabel's input ``kind`` and ``output.files`` values.
FORMATS: dict[str, Format] = {
    "tevatron": tevatron.FORMAT,
    "hf": hf.FORMAT,
    "beir": beir.FORMAT,
}


def export_kinds() -> list[str]:
    """The recipe's ``output.files`` choices."""
    return [name for name, fmt in FORMATS.items() if fmt.export]


def read_input(source: str | Path) -> RelabelInput:
    """Detect and read a relabel input: a ``.jsonl`` file (Tevatron), a saved dataset folder, or a Hub id."""
    src = str(source)
    for fmt in FORMATS.values():
        if fmt.read and fmt.accepts(src):
            return fmt.read(src)
    raise UserError(f"--input {src}: no such file or folder")


def write_output(inp: RelabelInput, examples: list[Example], out_dir: Path) -> dict:
    """Write ``examples`` in the input's format under ``out_dir``; returns counts for the report."""
    return FORMATS[inp.kind].write(inp, examples, out_dir)


def export(name: str, groups: list[Group], corpus, out_dir: Path) -> dict:
    """A run's ``output.files`` entry ``name`` under ``out_dir``: {"path": where, **counts}."""
    return FORMATS[name].export(groups, corpus, out_dir)


__all__ = ["FORMATS", "Format", "Group", "RelabelInput", "export", "export_kinds", "read_input", "write_output"]
