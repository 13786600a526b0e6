"""The base of every user-written config model (recipes, samplers, filters, sources, judge cascades,
LLM backends, generation sections).

One place for the rules every number obeys, so no config class can forget them:
- unknown keys are errors (``extra="forbid"``);
- floats are finite: ``.inf`` / ``.nan`` are rejected (``allow_inf_nan=False``); a NaN threshold
  compares false with everything and silently empties a dataset;
- integers are bounded: a field without its own upper bound is capped at ``MAX_INT`` (int32, what
  faiss, torch and numpy index arithmetic take), so 10**12 is a one-line error naming the key and
  not a crash stages later. A field that needs a wider range (a seed) declares its own ``le``.
"""

from __future__ import annotations

from typing import Any

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_INT = 2**31 - 1
SEED_MAX = 2**32 - 1  # numpy's legacy RandomState takes seeds below 2**32; torch and random take more


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_int(cls, value: Any, info: ValidationInfo) -> Any:
        if type(value) is not int or abs(value) <= MAX_INT:  # bool is not int here; small ints are the rule
            return value
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and any(isinstance(m, (annotated_types.Le, annotated_types.Lt)) for m in field.metadata):
            return value  # the field has its own bound, already enforced
        bound, kind = (MAX_INT, "less") if value > 0 else (-MAX_INT, "greater")
        raise PydanticCustomError(f"{kind}_than_equal", f"Input should be {kind} than or equal to {bound}")


class Section(BaseModel):
    """A report section whose keys are fixed by the code that writes it: an unknown key is an error. The
    producer's own stats class is the section's model (``synth.report`` only assembles them), so a section
    is declared once. Counters are set in place while the work runs; ``as_dict`` is what the report holds."""

    # NaN / Infinity written as JSON's constants (what json.dumps writes and json.loads reads back), not null
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    def as_dict(self) -> dict:
        return self.model_dump()
